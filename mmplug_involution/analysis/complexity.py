"""Parameter and FLOP counts of models with the package's operators.

``mmengine.analysis`` (and the toolkits' ``get_flops`` tools built on it)
traces models with JIT and skips ops it has no handle for. The handles here
count ``mmplug_involution::involution2d`` as one multiply-add per kernel tap
and output element (N * C * H_out * W_out * K * K), as the paper counts FLOPs;
``mmplug_involution::generated_involution2d`` (the involution layer's op,
which applies the kernel generator's last 1x1 conv itself) adds that conv's
multiply-adds; ``scaled_dot_product_attention`` (X-volution's global
attention) is counted too. :func:`model_complexity` passes them to mmengine's
``FlopAnalyzer``; importing :mod:`mmplug_involution.runtime` adds them to
mmengine's defaults for the toolkits' own tools.
"""
from math import prod
from typing import Any, Callable, Dict, List

from mmengine.analysis.jit_handles import get_shape

from ..ops.involution import GENERATED_INVOLUTION_OP, INVOLUTION_OP

__all__ = [
    'involution_flop_jit', 'generated_involution_flop_jit',
    'attention_flop_jit', 'complexity_handles', 'model_complexity'
]

ATTENTION_OP = 'aten::scaled_dot_product_attention'


def involution_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of one involution2d call from its traced arguments."""
    kernel_size = inputs[2].toIValue()
    return prod(get_shape(outputs[0])) * kernel_size * kernel_size


def generated_involution_flop_jit(inputs: List[Any],
                                  outputs: List[Any]) -> int:
    """Multiply-adds of one generated_involution2d call: the span conv
    (N * H_out * W_out * G*K*K * R) plus the involution."""
    kernel_size = inputs[4].toIValue()
    n, reduced, h, w = get_shape(inputs[1])
    span = n * h * w * get_shape(inputs[2])[0] * reduced
    return span + prod(get_shape(outputs[0])) * kernel_size * kernel_size


def attention_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of one ``scaled_dot_product_attention`` (X-volution's
    global attention): q k^T and the weighted sum of v, (..., L_q, E) x
    (..., L_k, E) x (..., L_k, E_v) -> L_q * L_k * (E + E_v) per batch."""
    *batch, queries, channels = get_shape(inputs[0])
    keys, value_channels = get_shape(inputs[2])[-2:]
    return prod(batch) * queries * keys * (channels + value_channels)


def _activation_count(inputs: List[Any], outputs: List[Any]) -> int:
    return prod(get_shape(outputs[0]))


def complexity_handles() -> Dict[str, Dict[str, Callable]]:
    """``{'flops': {op: handle}, 'activations': {op: handle}}`` for the
    package's ops (and attention's FLOPs)."""
    return dict(
        flops={
            INVOLUTION_OP: involution_flop_jit,
            GENERATED_INVOLUTION_OP: generated_involution_flop_jit,
            ATTENTION_OP: attention_flop_jit,
        },
        activations={
            INVOLUTION_OP: _activation_count,
            GENERATED_INVOLUTION_OP: _activation_count,
        })


def _counted_method(model):
    """What the papers count of ``model``: (method name, description)."""
    if hasattr(model, 'head') and hasattr(model, 'extract_feat'):
        # an mmpretrain classifier: its forward is backbone, neck and head
        return 'forward', 'forward (backbone, neck, head)'
    if hasattr(model, 'decode_head'):
        return '_forward', '_forward (backbone, neck, decode head)'
    if hasattr(model, 'extract_feat'):
        return 'extract_feat', 'extract_feat (backbone + neck)'
    return 'forward', 'forward'


class _CountedForward:
    """Makes ``model.forward`` the counted method while in the ``with``
    block; the model's own ``forward`` (or its absence from the instance)
    is restored after."""

    def __init__(self, model, method: str) -> None:
        self.model, self.method = model, method

    def __enter__(self):
        self.own = self.model.__dict__.get('forward')
        if self.method != 'forward':
            self.model.forward = getattr(self.model, self.method)

    def __exit__(self, *exc_info):
        if self.own is None:
            self.model.__dict__.pop('forward', None)
        else:
            self.model.forward = self.own


def model_complexity(model, input_shape=(3, 224, 224)) -> dict:
    """Parameters and FLOPs (multiply-adds) of ``model`` on one input.

    Counts what the papers count: for mmpretrain classifiers ``model(x)``
    (backbone, neck and head), for mmseg segmentors ``model._forward``
    (backbone, neck and decode head; auxiliary heads only train), for mmdet
    detectors ``model.extract_feat`` (backbone and neck), and ``model(x)``
    otherwise. The model is left as it was (its ``forward`` and training
    mode).

    Returns:
        dict with ``params``, ``flops``, ``counted`` (what was traced) and
        ``unsupported`` (ops traced without a handle, name -> count).
    """
    import torch
    from mmengine.analysis import FlopAnalyzer, parameter_count

    method, counted = _counted_method(model)
    device = next(model.parameters()).device
    inputs = (torch.rand(1, *input_shape, device=device), )
    was_training = model.training
    model.eval()
    try:
        with _CountedForward(model, method):
            analyzer = FlopAnalyzer(model, inputs)
            analyzer.set_op_handle(**complexity_handles()['flops'])
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
            flops = analyzer.total()
            unsupported = dict(analyzer.unsupported_ops())
    finally:
        model.train(was_training)
    return dict(
        params=parameter_count(model)[''],
        flops=flops,
        counted=counted,
        unsupported=unsupported)
