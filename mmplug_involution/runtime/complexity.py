"""Teach mmengine's complexity analysis to count the involution op.

``mmengine.analysis`` (and the toolkits' ``get_flops`` tools built on it)
traces models with JIT and skips ops it has no handle for. The involution op
appears as ``mmplug_involution::involution2d``; registering a handle in
mmengine's defaults, when the package is imported, makes every such tool count
it: one multiply-add per kernel tap and output element (N * C * H_out * W_out *
K * K), as the paper counts FLOPs.
``mmplug_involution::generated_involution2d`` (the involution layer's op, which
applies the kernel generator's last 1x1 conv itself) counts that conv's
multiply-adds as well; ``scaled_dot_product_attention`` (X-volution's global
attention) is counted too.
"""
from math import prod
from typing import Any, List

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import get_shape

__all__ = [
    'involution_flop_jit', 'generated_involution_flop_jit',
    'attention_flop_jit',
    'model_complexity', 'register_complexity_handles'
]

INVOLUTION_OP = 'mmplug_involution::involution2d'
GENERATED_INVOLUTION_OP = 'mmplug_involution::generated_involution2d'
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


def register_complexity_handles() -> None:
    """Add the involution (and attention) handles to mmengine's default
    flop/activation ops."""
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[INVOLUTION_OP] = (
        involution_flop_jit)
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS[INVOLUTION_OP] = (
        _activation_count)
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[
        GENERATED_INVOLUTION_OP] = generated_involution_flop_jit
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS[
        GENERATED_INVOLUTION_OP] = _activation_count
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[ATTENTION_OP] = (
        attention_flop_jit)


def model_complexity(model, input_shape=(3, 224, 224)) -> dict:
    """Parameters and FLOPs (multiply-adds) of ``model`` on one input.

    Counts what the papers count: for mmpretrain classifiers ``model(x)``
    (backbone, neck and head), for mmseg segmentors ``model._forward``
    (backbone, neck and decode head; auxiliary heads only train), for mmdet
    detectors ``model.extract_feat`` (backbone and neck), and ``model(x)``
    otherwise. The model's ``forward`` is replaced by the counted method.

    Returns:
        dict with ``params``, ``flops``, ``counted`` (what was traced) and
        ``unsupported`` (ops traced without a handle, name -> count).
    """
    import torch
    from mmengine.analysis import FlopAnalyzer, parameter_count

    register_complexity_handles()
    counted = 'forward'
    if hasattr(model, 'head') and hasattr(model, 'extract_feat'):
        # an mmpretrain classifier: its forward is backbone, neck and head
        counted = 'forward (backbone, neck, head)'
    elif hasattr(model, 'decode_head'):
        counted = '_forward (backbone, neck, decode head)'
        model.forward = model._forward
    elif hasattr(model, 'extract_feat'):
        counted = 'extract_feat (backbone + neck)'
        model.forward = model.extract_feat
    device = next(model.parameters()).device
    inputs = (torch.rand(1, *input_shape, device=device), )
    was_training = model.training
    model.eval()
    try:
        analyzer = FlopAnalyzer(model, inputs)
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
