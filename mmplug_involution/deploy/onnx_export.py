"""Export a config's model to ONNX and check it in ONNX Runtime.

What is exported is the model's tensor-mode forward, the part that is pure
tensor maths: for an mmdet single-stage detector the features and the dense
head's raw outputs (``mode='tensor'``); for a two-stage detector the
features and the RPN head's raw outputs (proposal selection, RoIAlign and the
RoI heads need the boxes of post-processing, which stays in PyTorch); for an
mmseg segmentor the decode head's logits (``mode='tensor'``); for a backbone
or any other module its outputs. Inputs are the batch the data preprocessor
produces (normalised, padded), (N, 3, H, W).
"""
import contextlib
import inspect
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.onnx import (CUSTOM_DOMAIN, CUSTOM_OPSETS, ONNX_OPSET,
                        custom_op_nodes)

__all__ = [
    'TensorOutputs', 'export_onnx', 'compare_with_onnxruntime',
    'compare_with_openvino', 'EXPORTERS'
]

EXPORTERS = ('dynamo', 'torchscript')


def _flatten(outputs) -> List[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = outputs.values()
    return [t for item in outputs for t in _flatten(item)]


class TensorOutputs(nn.Module):
    """``model``'s exportable forward, (N, 3, H, W) -> a flat tuple of
    tensors (see the module docstring for what each kind of model gives)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # not a fresh module's training mode

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        model = self.model
        if hasattr(model, 'rpn_head') and hasattr(model, 'roi_head'):
            outputs = model.rpn_head(model.extract_feat(inputs))
        elif hasattr(model, 'extract_feat') and hasattr(model, '_forward'):
            outputs = model._forward(inputs)
        else:
            outputs = model(inputs)
        return tuple(_flatten(outputs))


@contextlib.contextmanager
def _size_preserving_rewrites() -> Iterator[None]:
    """Rewrites of toolkit code that turns tensor sizes into Python numbers,
    which an export records as constants of the example's size, for the
    duration of an export. mmseg's ``Upsample`` computes its output size as
    ``int(size * scale_factor)``: exported at one size, the upsampling of
    another input would then go to the wrong size (and a later resize to
    the right one hides it). Resizing by the factor itself gives the same
    values and stays dynamic."""
    try:
        from mmseg.models.utils import Upsample
    except ImportError:
        yield
        return

    def forward(self, x):
        if self.size or not self.scale_factor:
            return original(self, x)
        return F.interpolate(
            x,
            scale_factor=self.scale_factor,
            mode=self.mode,
            align_corners=self.align_corners)

    original = Upsample.forward
    Upsample.forward = forward
    try:
        yield
    finally:
        Upsample.forward = original


def export_onnx(module: nn.Module,
                inputs: Tensor,
                path: str,
                dynamic: bool = False,
                exporter: str = 'dynamo',
                size_divisor: int = 1,
                dynamic_spatial: bool = True,
                custom_ops: bool = False) -> None:
    """Write ``module(inputs)`` as an ONNX file (opset 17 or later, standard
    operators only unless ``custom_ops``).

    Args:
        module: returns a tensor or a tuple of tensors (e.g.
            :class:`TensorOutputs`); exported in eval mode as it is.
        inputs: (N, C, H, W), an example batch.
        dynamic: the batch dynamic, and with ``dynamic_spatial`` height and
            width too (multiples of ``size_divisor``, which must divide the
            example's).
        exporter: ``'dynamo'`` (torch's default) or ``'torchscript'``.
        custom_ops: each involution as one node of the custom domain
            ``mmplug_involution`` (for OpenVINO with the package's
            extension, :func:`.openvino.compile_openvino`) instead of
            standard operators (any runtime).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got '
                         f'{exporter!r}.')
    if exporter == 'dynamo' and 'dynamic_shapes' not in inspect.signature(
            torch.onnx.export).parameters:
        raise RuntimeError(
            'the dynamo ONNX exporter needs torch.onnx.export(dynamo=True, '
            f'dynamic_shapes=...), which torch {torch.__version__} lacks: '
            'use a newer torch (2.14.1 is tested), or export with '
            "exporter='torchscript' (tools/deploy/export_onnx.py "
            '--exporter torchscript).')
    dynamic_spatial = dynamic and dynamic_spatial
    if dynamic_spatial and any(size % size_divisor
                               for size in inputs.shape[2:]):
        raise ValueError(f'the example size {tuple(inputs.shape[2:])} must '
                         f'be a multiple of size_divisor={size_divisor}.')
    nodes = custom_op_nodes() if custom_ops else contextlib.nullcontext()
    with _size_preserving_rewrites(), nodes:
        _export(module, inputs, path, dynamic, dynamic_spatial, exporter,
                size_divisor, custom_ops)


def _export(module, inputs, path, dynamic, dynamic_spatial, exporter,
            size_divisor, custom_ops):
    names = dict(input_names=['inputs'])
    with torch.no_grad():
        count = len(_flatten(module(inputs)))
    names['output_names'] = [f'output_{i}' for i in range(count)]
    if exporter == 'torchscript':
        axes = {
            'inputs': {
                0: 'batch',
                2: 'height',
                3: 'width'
            } if dynamic_spatial else {
                0: 'batch'
            }
        }
        torch.onnx.export(
            module, (inputs, ),
            path,
            dynamo=False,
            opset_version=ONNX_OPSET,
            custom_opsets=CUSTOM_OPSETS if custom_ops else None,
            dynamic_axes=axes if dynamic else None,
            **names)
        return
    shapes = None
    if dynamic:
        dim = torch.export.Dim
        if not dynamic_spatial:
            spatial = {}
        elif size_divisor > 1:
            spatial = {
                axis: size_divisor * dim(f'{name}_{size_divisor}', min=1)
                for axis, name in ((2, 'height'), (3, 'width'))
            }
        else:
            spatial = {2: dim('height', min=2), 3: dim('width', min=2)}
        shapes = ({0: dim('batch', min=1), **spatial}, )
    # the onnxscript graph optimiser takes minutes on models with thousands
    # of nodes and ONNX Runtime optimises the graph itself when it loads it
    program = torch.onnx.export(
        module, (inputs, ),
        dynamo=True,
        dynamic_shapes=shapes,
        optimize=False,
        **names)
    program.save(path)


def _compare(run, module: nn.Module, batches: Sequence[Tensor], path: str,
             runtime: str) -> List[dict]:
    """``run(batch)`` (a runtime's outputs, numpy) against ``module``'s, per
    batch: the shape, the largest absolute difference and that difference
    relative to the largest magnitude of the output it is in."""
    results = []
    for batch in batches:
        with torch.no_grad():
            expected = _flatten(module(batch))
        got = run(batch.numpy())
        if len(got) != len(expected):
            raise RuntimeError(f'{path} gives {len(got)} outputs, the model '
                               f'{len(expected)}.')
        worst_abs = worst_rel = 0.
        for ours, theirs in zip(got, expected):
            theirs = theirs.numpy()
            if ours.shape != theirs.shape:
                raise RuntimeError(
                    f'{path}: an output has shape {ours.shape} in {runtime} '
                    f'but {theirs.shape} in PyTorch for input '
                    f'{tuple(batch.shape)}.')
            diff = float(np.abs(ours - theirs).max(initial=0.))
            scale = float(np.abs(theirs).max(initial=0.)) or 1.
            worst_abs, worst_rel = max(worst_abs,
                                       diff), max(worst_rel, diff / scale)
        results.append(
            dict(
                shape=tuple(batch.shape), max_abs=worst_abs,
                max_rel=worst_rel))
    return results


def compare_with_onnxruntime(path: str, module: nn.Module,
                             batches: Sequence[Tensor]) -> List[dict]:
    """Run the ONNX file in ONNX Runtime (CPU) on each batch and compare
    with ``module`` (see :func:`_compare`).

    Raises:
        RuntimeError: the file has custom-op nodes, which ONNX Runtime
            cannot run.
    """
    from .openvino import custom_op_types
    custom = custom_op_types(path)
    if custom:
        raise RuntimeError(
            f'{path} has {CUSTOM_DOMAIN} nodes ({", ".join(custom)}), which '
            'only OpenVINO with the package\'s extension runs: compare with '
            'compare_with_openvino, or export without custom_ops for ONNX '
            'Runtime.')
    import onnxruntime
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return _compare(lambda batch: session.run(None, {name: batch}), module,
                    batches, path, 'ONNX Runtime')


def compare_with_openvino(path: str,
                          module: nn.Module,
                          batches: Sequence[Tensor],
                          precision: str = 'f32') -> List[dict]:
    """Run the ONNX file (standard or custom-op) in OpenVINO (CPU, with the
    involution extension, at ``precision``) on each batch and compare with
    ``module`` (see :func:`_compare`)."""
    from .openvino import compile_openvino
    compiled = compile_openvino(path, precision=precision)
    return _compare(lambda batch: list(compiled(batch).values()), module,
                    batches, path, 'OpenVINO')
