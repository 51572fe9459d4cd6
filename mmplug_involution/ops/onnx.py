"""ONNX translations of the package's custom ops, in standard ONNX only.

``involution2d`` becomes one strided ``Slice`` of the padded input per tap of
the K x K window, multiplied by that tap's kernel plane (broadcast over the
channels of a group) and summed: no N*C*K*K*H*W tensor, peak memory a few
output-sized tensors; batch and spatial sizes are read from the tensors'
shapes, so dynamic axes export. ``generated_involution2d`` is the 1x1 ``Conv``
of the kernel generator followed by the same. Opset 17 by default (the
nodes exist from opset 11 on, so the TorchScript symbolics serve any opset
from 11), no custom domain: ONNX Runtime, TensorRT and OpenVINO run the
result.

* TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): symbolics
  registered when the package is imported (:func:`register_onnx_symbolics`).
* dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's default):
  torch has no public global registration for a custom op's translation,
  and it reads onnxscript's torchlib registry before it traces the model.
  When onnxscript is installed, importing the package adds the onnxscript
  translations to that registry with onnxscript's own ``torch_op``
  decorator (:func:`register_onnx_translations`; it imports onnxscript,
  about 0.6 s), so a plain ``torch.onnx.export(model, args, f)`` works.
  Should a future onnxscript move that registry,
  :func:`onnx_translation_table` gives the table to pass as
  ``custom_translation_table``.

Within :func:`custom_op_nodes`, both exporters write each op as one node
of the custom domain ``mmplug_involution`` instead (``Involution`` and
``GeneratedInvolution``, opset version 1, attributes ``kernel_size``,
``stride``, ``padding``, ``dilation``), which the package's OpenVINO
extension runs (:mod:`mmplug_involution.deploy.openvino`) and other
runtimes do not.

One graph builder serves both: it is written against an ``emit(op_type,
*inputs, **attributes)`` callable (``op_type`` ``'domain::Name'`` for a
custom domain's node) and an ``ints(values)`` constant maker, which each
exporter supplies.
"""
import contextlib
import importlib
import importlib.util
import warnings
from typing import Callable, Dict, Iterator, Sequence

import torch

from .involution import GENERATED_INVOLUTION_OP, INVOLUTION_OP

__all__ = [
    'ONNX_OPSET', 'CUSTOM_DOMAIN', 'CUSTOM_OPSETS', 'custom_op_nodes',
    'onnx_translation_table', 'register_onnx_symbolics',
    'register_onnx_translations'
]

ONNX_OPSET = 17  # what the package's exports use
SYMBOLIC_MIN_OPSET = 11  # the oldest opset the nodes below exist in (Pad,
# Slice and Reshape with tensor inputs): mmdeploy's configs export at 11
CUSTOM_DOMAIN = 'mmplug_involution'
CUSTOM_OPSETS = {CUSTOM_DOMAIN: 1}  # the custom domain's version

_custom_nodes = False


@contextlib.contextmanager
def custom_op_nodes() -> Iterator[None]:
    """Within: exports write each involution as one node of the custom domain
    :data:`CUSTOM_DOMAIN` rather than standard operators (process-wide)."""
    global _custom_nodes
    previous, _custom_nodes = _custom_nodes, True
    try:
        yield
    finally:
        _custom_nodes = previous


def _zero_after(emit: Callable, ints: Callable, tensor):
    """An int64 [0] that can only be computed once ``tensor`` (5-D) is:
    ``Cast(e < e)`` of its first element (false for every value, NaN
    included). Added to tap t's window start, it makes tap t's ``Slice``
    wait for tap t-1's sum; without it a runtime may run all K*K Slices
    first (they are all ready at once) and hold K*K input-sized windows
    (measured in ONNX Runtime for a 7x7 layer: 320 against 57 MiB). A shape
    would not do: with static shapes it is folded into a constant."""
    first = emit('Reshape', emit('Slice', tensor, ints([0] * 5),
                                 ints([1] * 5)), ints([1]))
    return emit('Cast', emit('Less', first, first), to=7)  # INT64


def _window_attributes(kernel_size: int, stride: int, padding: int,
                       dilation: int) -> dict:
    return dict(
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation)


def _involution_nodes(emit: Callable, ints: Callable, input, kernel,
                      kernel_size: int, stride: int, padding: int,
                      dilation: int):
    """The involution of ``input`` (N, C, H, W) with ``kernel``
    (N, G*K*K, H_out, W_out) as standard ONNX nodes (within
    :func:`custom_op_nodes`: one ``Involution`` node); returns the
    output."""
    if _custom_nodes:
        return emit(
            f'{CUSTOM_DOMAIN}::Involution', input, kernel,
            **_window_attributes(kernel_size, stride, padding, dilation))
    taps = kernel_size * kernel_size

    def dims(tensor, *axes):  # (Shape with start/end trips torch's
        # TorchScript shape inference on static shapes)
        return emit('Gather', emit('Shape', tensor), ints(axes), axis=0)

    batch, batch_channels = dims(input, 0), dims(input, 0, 1)
    out_hw = dims(kernel, 2, 3)
    groups = emit('Div', dims(kernel, 1), ints([taps]))
    if padding:
        input = emit('Pad', input,
                     ints([0, 0, padding, padding, 0, 0, padding, padding]))
    in_hw = dims(input, 2, 3)
    # (N, G, C/G, H_p, W_p) and (N, G, K*K, H_out, W_out)
    grouped = emit('Reshape', input,
                   emit('Concat', batch, groups, ints([-1]), in_hw, axis=0))
    planes = emit('Reshape', kernel,
                  emit('Concat', batch, groups, ints([taps]), out_hw, axis=0))
    stride_pair = ints([stride, stride])
    span = emit('Mul', out_hw, stride_pair)
    out = None
    for tap in range(taps):
        start = ints(
            [tap // kernel_size * dilation, tap % kernel_size * dilation])
        if out is not None:
            start = emit('Add', start, _zero_after(emit, ints, out))
        window = emit('Slice', grouped, start, emit('Add', start, span),
                      ints([3, 4]), stride_pair)
        plane = emit('Slice', planes, ints([tap]), ints([tap + 1]), ints([2]))
        term = emit('Mul', window, plane)
        out = term if out is None else emit('Add', out, term)
    return emit('Reshape', out, emit('Concat', batch_channels, out_hw, axis=0))


def _generated_involution_nodes(emit: Callable, ints: Callable, input, reduced,
                                weight, bias, *window):
    """The kernel generator's 1x1 ``Conv`` (``bias`` None: without),
    then :func:`_involution_nodes` with ``window`` (K, s, p, d); within
    :func:`custom_op_nodes` one ``GeneratedInvolution`` node."""
    conv_inputs = [reduced, weight] + ([] if bias is None else [bias])
    if _custom_nodes:
        return emit(f'{CUSTOM_DOMAIN}::GeneratedInvolution', input,
                    *conv_inputs, **_window_attributes(*window))
    kernel = emit('Conv', *conv_inputs, kernel_shape=[1, 1])
    return _involution_nodes(emit, ints, input, kernel, *window)


# --- TorchScript exporter --------------------------------------------------


def _torchscript_emitters(g):
    suffixes = {int: '_i', float: '_f', str: '_s'}

    def emit(op_type: str, *inputs, **attributes):
        named = {}
        for key, value in attributes.items():
            first = value[0] if isinstance(value, (list, tuple)) else value
            kind = type(first)
            named[key + suffixes[kind]] = value
        return g.op(op_type, *inputs, **named)

    def ints(values: Sequence[int]):
        return g.op(
            'Constant', value_t=torch.tensor(list(values), dtype=torch.int64))

    return emit, ints


def _window_constants(*values):
    """The symbolic's (kernel_size, stride, padding, dilation) as ints."""
    from torch.onnx import symbolic_helper
    return [
        symbolic_helper._get_const(value, 'i', name)
        for value, name in zip(values, ('kernel_size', 'stride', 'padding',
                                        'dilation'))
    ]


def _involution2d_symbolic(g, input, kernel, *window_and_backend):
    return _involution_nodes(*_torchscript_emitters(g), input, kernel,
                             *_window_constants(*window_and_backend[:4]))


def _generated_involution2d_symbolic(g, input, reduced, weight, bias,
                                     *window_and_backend):
    from torch.onnx import symbolic_helper
    return _generated_involution_nodes(
        *_torchscript_emitters(g), input, reduced, weight,
        None if symbolic_helper._is_none(bias) else bias,
        *_window_constants(*window_and_backend[:4]))


def register_onnx_symbolics() -> None:
    """Teach the TorchScript ONNX exporter the package's custom ops."""
    from torch.onnx import register_custom_op_symbolic
    register_custom_op_symbolic(INVOLUTION_OP, _involution2d_symbolic,
                                SYMBOLIC_MIN_OPSET)
    register_custom_op_symbolic(GENERATED_INVOLUTION_OP,
                                _generated_involution2d_symbolic,
                                SYMBOLIC_MIN_OPSET)


# --- dynamo exporter (onnxscript) ------------------------------------------


def _custom_schema(name: str, inputs: Sequence[str]):
    """The ONNX schema of a custom-domain node (onnxscript needs one to
    write it): float tensors in (a trailing ``bias`` optional), one out,
    the window's int attributes."""
    from onnx import defs
    parameter = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    return defs.OpSchema(
        name,
        CUSTOM_DOMAIN,
        CUSTOM_OPSETS[CUSTOM_DOMAIN],
        inputs=[
            parameter(input, 'T', param_option=optional)
            if input == 'bias' else parameter(input, 'T') for input in inputs
        ],
        outputs=[parameter('output', 'T')],
        type_constraints=[('T', ['tensor(float)'], 'float tensors')],
        attributes=[
            defs.OpSchema.Attribute(attribute, defs.OpSchema.AttrType.INT)
            for attribute in _window_attributes(1, 1, 0, 1)
        ])


_CUSTOM_INPUTS = {
    'Involution': ('input', 'kernel'),
    'GeneratedInvolution': ('input', 'reduced', 'weight', 'bias'),
}


def _onnxscript_emitters():
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset

    def emit(op_type: str, *inputs, **attributes):
        if '::' in op_type:
            domain, name = op_type.split('::')
            custom = Op(
                Opset(domain, CUSTOM_OPSETS[domain]), name,
                _custom_schema(name, _CUSTOM_INPUTS[name]))
            return custom(*inputs, **attributes)
        return getattr(op, op_type)(*inputs, **attributes)

    def ints(values: Sequence[int]):
        return op.Constant(value_ints=list(values))

    return emit, ints


def _involution2d_onnxscript(input,
                             kernel,
                             kernel_size: int,
                             stride: int,
                             padding: int,
                             dilation: int,
                             backend: str = 'auto'):
    """``backend`` (which kernels ran in PyTorch) has no part in the graph."""
    return _involution_nodes(*_onnxscript_emitters(), input, kernel,
                             kernel_size, stride, padding, dilation)


def _generated_involution2d_onnxscript(input,
                                       reduced,
                                       weight,
                                       bias,
                                       kernel_size: int,
                                       stride: int,
                                       padding: int,
                                       dilation: int,
                                       backend: str = 'auto'):
    return _generated_involution_nodes(*_onnxscript_emitters(), input, reduced,
                                       weight, bias, kernel_size, stride,
                                       padding, dilation)


def onnx_translation_table() -> Dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``:
    the package's custom ops to their onnxscript translations.

    Raises:
        ImportError: onnxscript is not installed (``pip install onnxscript``).
    """
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            'The dynamo ONNX exporter needs onnxscript: pip install onnx '
            'onnxscript (or export with dynamo=False).') from error
    ops = torch.ops.mmplug_involution
    return {
        ops.involution2d.default: _involution2d_onnxscript,
        ops.generated_involution2d.default: _generated_involution2d_onnxscript,
    }


_TORCHLIB_REGISTRATION = 'onnxscript.function_libs.torch_lib.registration'

_registered_in_torchlib = False


def _register_in_torchlib(registration) -> None:
    try:
        for name, function in ((INVOLUTION_OP, _involution2d_onnxscript),
                               (GENERATED_INVOLUTION_OP,
                                _generated_involution2d_onnxscript)):
            registration.torch_op(name, trace_only=True)(function)
    except (AttributeError, TypeError) as error:
        warnings.warn(
            f'Could not add the involution ONNX translations to onnxscript\'s '
            f'registry ({error}); pass custom_translation_table='
            'mmplug_involution.ops.onnx_translation_table() to '
            'torch.onnx.export(dynamo=True).')


def register_onnx_translations() -> None:
    """Add the package's onnxscript translations to onnxscript's torchlib
    registry, which the dynamo exporter reads; nothing when onnxscript is
    not installed. Idempotent; run when the package is imported."""
    global _registered_in_torchlib
    if _registered_in_torchlib or importlib.util.find_spec(
            'onnxscript') is None:
        return
    _register_in_torchlib(importlib.import_module(_TORCHLIB_REGISTRATION))
    _registered_in_torchlib = True
