"""``involution2d``: argument checks, backend choice, ``torch.library`` op.

Backends (one module each in :mod:`.backends`, under these names):
  * ``cupy``    CUDA kernels compiled through CuPy (CUDA tensors, the default
    there).
  * ``cpp``     vectorised C++ CPU kernels (NCHW and channels_last), built on
    first use (CPU tensors, the default there).
  * ``pytorch`` tap-by-tap PyTorch ops without the unfold tensor (any device:
    CPU tensors when the C++ kernels are not built, CUDA tensors when CuPy is
    missing, each with one warning saying what to do).
One is forced in code with the context manager :func:`use_backend`, or for
the whole process with the environment variable ``MMPLUG_INVOLUTION_BACKEND``
(``auto``, ``cupy``, ``cpp`` or ``pytorch``); :func:`use_backend` wins. The
backend is resolved once per operator call (:func:`select_backend`), and the
backward pass runs on the backend that ran the forward pass.

The op is registered as ``torch.ops.mmplug_involution.involution2d``
(:data:`INVOLUTION_OP`) with a fake (meta) implementation and an autograd
formula, so ``torch.compile`` traces models that use it without graph
breaks. So is ``generated_involution2d`` (:data:`GENERATED_INVOLUTION_OP`),
the involution whose kernel is a 1x1 conv of reduced features (the
involution layer's kernel generator ends in one), and its backward
(``generated_involution2d_backward``): each backend computes them its own
way. On CPU tensors the C++ kernels compute that conv inside the
aggregation (in NHWC, whatever the tensors' layout), and the backward in one
fused pass per band of output rows: neither the kernel nor its gradient is
ever written as a whole tensor. The other backends compute the kernel, and
recompute it in the backward pass instead of keeping it.
"""
import contextlib
import os
import warnings
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from .backends import BACKEND_MODULES, native_backend

__all__ = [
    'involution2d', 'generated_involution2d', 'involution_output_size',
    'select_backend', 'use_backend', 'requested_backend', 'memory_format_of',
    'BACKEND_ENV', 'BACKENDS', 'INVOLUTION_OP', 'GENERATED_INVOLUTION_OP'
]

INVOLUTION_OP = 'mmplug_involution::involution2d'
GENERATED_INVOLUTION_OP = 'mmplug_involution::generated_involution2d'
BACKEND_ENV = 'MMPLUG_INVOLUTION_BACKEND'
BACKENDS = ('auto', *BACKEND_MODULES)  # auto, cupy, cpp, pytorch
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32,
                    torch.float64)
_warned = set()
#: the backend :func:`use_backend` forces (innermost block), or None
_forced_in_code: Optional[str] = None


def involution_output_size(size: int, kernel_size: int, stride: int,
                           padding: int, dilation: int) -> int:
    """floor((size + 2p - d(K-1) - 1) / s) + 1, as for a convolution."""
    return (size + 2 * padding - dilation *
            (kernel_size - 1) - 1) // stride + 1


def memory_format_of(tensor: Tensor) -> torch.memory_format:
    """channels_last for a channels_last (and not also contiguous) tensor,
    else contiguous: the layout the op returns for such an input."""
    if not tensor.is_contiguous() and tensor.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _backend_name(name, source: str) -> str:
    """``name`` normalised, or a ValueError naming ``source``."""
    forced = name.strip().lower() if isinstance(name, str) else name
    if forced not in BACKENDS:
        raise ValueError(f'{source}={name!r} is not a backend; use one of '
                         f'{", ".join(BACKENDS)}.')
    return forced


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the involutions called inside the block on backend ``name``
    (``auto``, ``cupy``, ``cpp`` or ``pytorch``), whatever
    ``MMPLUG_INVOLUTION_BACKEND`` says. Process-wide while the block runs,
    like ``torch.backends.cudnn.flags``; blocks nest. A backward pass runs
    on the backend of its forward pass, inside the block or not.

    Example::

        with use_backend('pytorch'):
            out = model(x)
    """
    global _forced_in_code
    outer, _forced_in_code = _forced_in_code, _backend_name(
        name, 'use_backend')
    try:
        yield
    finally:
        _forced_in_code = outer


def requested_backend() -> Tuple[str, str]:
    """``(name, where it was asked)``: :func:`use_backend`'s, else
    ``MMPLUG_INVOLUTION_BACKEND``'s (``auto`` when unset)."""
    if _forced_in_code is not None:
        return _forced_in_code, 'use_backend'
    value = os.environ.get(BACKEND_ENV, '')
    return _backend_name(value or 'auto', BACKEND_ENV), BACKEND_ENV


@torch.compiler.assume_constant_result
def select_backend(device: torch.device) -> str:
    """The name of the backend that runs on ``device``.

    Honours :func:`use_backend`, then ``MMPLUG_INVOLUTION_BACKEND``;
    ``auto`` is the device's native backend, or ``pytorch`` (with one
    warning) where that cannot run. Under ``torch.compile`` it is resolved
    when the graph is traced.
    """
    forced, source = requested_backend()
    name = native_backend(device) if forced == 'auto' else forced
    backend = BACKEND_MODULES[name]
    if backend.DEVICE_TYPE not in (None, device.type):
        raise ValueError(f'{source}={forced} needs '
                         f'{backend.DEVICE_TYPE.upper()} tensors, got tensors '
                         f'on {device}.')
    missing = backend.unavailable_reason(device)
    if missing is None:
        return name
    if forced != 'auto':
        raise RuntimeError(missing)
    if name not in _warned:
        warnings.warn(f'{missing} Falling back to the slower PyTorch '
                      f'implementation of involution on {device.type}.')
        _warned.add(name)
    return 'pytorch'


def _resolved(backend: str, device: torch.device) -> str:
    """A backend name as the ops pass it: ``auto`` is resolved now."""
    return select_backend(device) if backend == 'auto' else backend


@torch.library.custom_op(INVOLUTION_OP, mutates_args=())
def _involution2d_op(input: Tensor, kernel: Tensor, kernel_size: int,
                     stride: int, padding: int, dilation: int,
                     backend: str) -> Tensor:
    """``backend``: the one :func:`select_backend` chose for this call, or
    ``'auto'`` (resolved here) from a direct ``torch.ops`` call. No default:
    torch 2.4's schema inference takes none for a ``str``."""
    backend = BACKEND_MODULES[_resolved(backend, input.device)]
    out = backend.forward(input, kernel, kernel_size, stride, padding,
                          dilation)
    return out.contiguous(memory_format=memory_format_of(input))


@_involution2d_op.register_fake
def _involution2d_fake(input, kernel, kernel_size, stride, padding, dilation,
                       backend):
    return input.new_empty(
        input.shape[0], input.shape[1],
        *kernel.shape[-2:]).contiguous(memory_format=memory_format_of(input))


@torch.library.custom_op(
    'mmplug_involution::involution2d_backward', mutates_args=())
def _involution2d_backward_op(grad_output: Tensor, input: Tensor,
                              kernel: Tensor, kernel_size: int, stride: int,
                              padding: int, dilation: int,
                              backend: str) -> Tuple[Tensor, Tensor]:
    backend = BACKEND_MODULES[backend]
    grad_input, grad_kernel = backend.backward(grad_output, input, kernel,
                                               kernel_size, stride, padding,
                                               dilation)
    return (grad_input.contiguous(memory_format=memory_format_of(input)),
            grad_kernel.contiguous(memory_format=memory_format_of(kernel)))


@_involution2d_backward_op.register_fake
def _involution2d_backward_fake(grad_output, input, kernel, kernel_size,
                                stride, padding, dilation, backend):
    return (torch.empty_like(input, memory_format=memory_format_of(input)),
            torch.empty_like(kernel, memory_format=memory_format_of(kernel)))


def _setup_context(ctx, inputs, output):
    input, kernel, kernel_size, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(input, kernel)
    ctx.params = (kernel_size, stride, padding, dilation,
                  _resolved(backend, input.device))


def _backward(ctx, grad_output):
    input, kernel = ctx.saved_tensors
    grad_input, grad_kernel = _involution2d_backward_op(
        grad_output, input, kernel, *ctx.params)
    return grad_input, grad_kernel, None, None, None, None, None


_involution2d_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op(GENERATED_INVOLUTION_OP, mutates_args=())
def _generated_involution2d_op(input: Tensor, reduced: Tensor, weight: Tensor,
                               bias: Optional[Tensor], kernel_size: int,
                               stride: int, padding: int, dilation: int,
                               backend: str) -> Tensor:
    backend = BACKEND_MODULES[_resolved(backend, input.device)]
    out = backend.generated_forward(input, reduced, weight, bias, kernel_size,
                                    stride, padding, dilation)
    return out.contiguous(memory_format=memory_format_of(input))


@_generated_involution2d_op.register_fake
def _generated_involution2d_fake(input, reduced, weight, bias, kernel_size,
                                 stride, padding, dilation, backend):
    return input.new_empty(
        input.shape[0], input.shape[1],
        *reduced.shape[-2:]).contiguous(memory_format=memory_format_of(input))


def _generated_setup_context(ctx, inputs, output):
    input, reduced, weight, bias = inputs[:4]
    ctx.save_for_backward(input, reduced, weight, bias)
    ctx.params = (*inputs[4:8], _resolved(inputs[8], input.device))


@torch.library.custom_op(
    'mmplug_involution::generated_involution2d_backward', mutates_args=())
def _generated_involution2d_backward_op(
        grad_output: Tensor, input: Tensor, reduced: Tensor, weight: Tensor,
        bias: Optional[Tensor], kernel_size: int, stride: int, padding: int,
        dilation: int, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    backend = BACKEND_MODULES[backend]
    grad_input, grad_reduced, grad_weight, grad_bias = (
        backend.generated_backward(grad_output, input, reduced, weight, bias,
                                   kernel_size, stride, padding, dilation))
    return (grad_input.contiguous(memory_format=memory_format_of(input)),
            grad_reduced.contiguous(memory_format=memory_format_of(reduced)),
            grad_weight.contiguous(), grad_bias.contiguous())


@_generated_involution2d_backward_op.register_fake
def _generated_involution2d_backward_fake(grad_output, input, reduced, weight,
                                          bias, kernel_size, stride, padding,
                                          dilation, backend):
    return (torch.empty_like(input, memory_format=memory_format_of(input)),
            torch.empty_like(reduced, memory_format=memory_format_of(reduced)),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty(0 if bias is None else bias.shape[0]))


def _generated_backward(ctx, grad_output):
    # the backend recomputes the kernel rather than keeping it from the
    # forward pass (it holds G*K*K values per output pixel); the cpp backend
    # never writes it, nor its gradient
    input, reduced, weight, bias = ctx.saved_tensors
    grad_input, grad_reduced, grad_weight, grad_bias = (
        _generated_involution2d_backward_op(grad_output, input, reduced,
                                            weight, bias, *ctx.params))
    return (grad_input, grad_reduced, grad_weight,
            None if bias is None else grad_bias, None, None, None, None, None)


_generated_involution2d_op.register_autograd(
    _generated_backward, setup_context=_generated_setup_context)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value,
                  bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}.')
    return value


def _window_args(kernel_size, stride, padding, dilation) -> Tuple[int, ...]:
    """Checked ``(kernel_size, stride, padding, dilation)``; padding None is
    the centred ``dilation * (kernel_size - 1) // 2``."""
    kernel_size = _check_int('kernel_size', kernel_size, 1)
    stride = _check_int('stride', stride, 1)
    dilation = _check_int('dilation', dilation, 1)
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    return kernel_size, stride, _check_int('padding', padding, 0), dilation


def _check_tensor(name: str, t, dims_hint: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor, got '
                         f'{type(t).__name__}.')
    if t.dim() != 4:
        raise ValueError(f'{name} must be 4-D, got shape {tuple(t.shape)}; '
                         f'expected {dims_hint}.')
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f'{name} has dtype {t.dtype}; supported: float16, '
                         'bfloat16, float32, float64.')


def _check_args(input: Tensor, kernel: Tensor, kernel_size: int, stride: int,
                padding: int, dilation: int) -> None:
    hint = 'input (N, C, H, W) and kernel (N, G*K*K, H_out, W_out)'
    _check_tensor('input', input, hint)
    _check_tensor('kernel', kernel, hint)
    if input.device != kernel.device:
        raise ValueError(f'input is on {input.device} but kernel is on '
                         f'{kernel.device}; move both to the same device.')
    if input.dtype != kernel.dtype:
        raise ValueError(
            f'input has dtype {input.dtype} but kernel has '
            f'{kernel.dtype}; cast both to the same dtype (or run '
            'under torch.autocast).')
    _check_shapes(input.shape, tuple(kernel.shape), kernel_size, stride,
                  padding, dilation)


def _check_shapes(input_shape, kernel_shape, kernel_size: int, stride: int,
                  padding: int, dilation: int) -> None:
    """Input and kernel shapes (the kernel's given or generated) agree."""
    if kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be odd, got {kernel_size}.')
    n, c, h, w = input_shape
    taps = kernel_size * kernel_size
    if kernel_shape[1] % taps != 0:
        raise ValueError(
            f'kernel has {kernel_shape[1]} channels, expected G*K*K = G*'
            f'{taps} for kernel_size={kernel_size} (kernel shape '
            f'{kernel_shape}, input shape {tuple(input_shape)}).')
    groups = kernel_shape[1] // taps
    if groups == 0 or c % groups != 0:
        raise ValueError(
            f'input has C={c} channels, which is not divisible by the '
            f'G={groups} groups of kernel shape {kernel_shape} '
            f'(G = {kernel_shape[1]} / {kernel_size}^2).')
    ho = involution_output_size(h, kernel_size, stride, padding, dilation)
    wo = involution_output_size(w, kernel_size, stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ValueError(
            f'input shape {tuple(input_shape)} is too small for kernel_size='
            f'{kernel_size}, stride={stride}, padding={padding}, dilation='
            f'{dilation}: output would be {ho}x{wo}.')
    expected = (n, groups * taps, ho, wo)
    if kernel_shape != expected:
        raise ValueError(
            f'kernel shape {kernel_shape} does not match input shape '
            f'{tuple(input_shape)}: expected {expected} for kernel_size='
            f'{kernel_size}, stride={stride}, padding={padding}, dilation='
            f'{dilation}.')


def involution2d(input: Tensor,
                 kernel: Tensor,
                 kernel_size: int,
                 stride: int = 1,
                 padding: Optional[int] = None,
                 dilation: int = 1) -> Tensor:
    """Involution: a per-pixel K x K kernel shared by each group of channels.

    ``out[n, c, i, j] = sum_{u,v} kernel[n, g*K*K + u*K + v, i, j] *
    input[n, c, i*s - p + u*d, j*s - p + v*d]`` with ``g = c // (C / G)``;
    reads outside the input are zero.

    Args:
        input: (N, C, H, W), float16/bfloat16/float32/float64.
        kernel: (N, G*K*K, H_out, W_out), group-major, same dtype and device.
        kernel_size: K, odd.
        stride, dilation: s >= 1, d >= 1.
        padding: p >= 0; defaults to ``dilation * (kernel_size - 1) // 2``.

    Returns:
        (N, C, H_out, W_out) with
        ``H_out = floor((H + 2p - d(K-1) - 1)/s) + 1``.

    Under ``torch.autocast`` both operands are cast to the autocast dtype;
    fp16/bf16 accumulate in fp32. Differentiable in ``input`` and ``kernel``.
    """
    kernel_size, stride, padding, dilation = _window_args(
        kernel_size, stride, padding, dilation)
    if (isinstance(input, Tensor) and isinstance(kernel, Tensor)
            and torch.is_autocast_enabled(input.device.type)):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, kernel = input.to(dtype), kernel.to(dtype)
    _check_args(input, kernel, kernel_size, stride, padding, dilation)
    return _involution2d_op(input, kernel, kernel_size, stride, padding,
                            dilation, select_backend(input.device))


def _check_generator(input: Tensor, reduced: Tensor, weight: Tensor,
                     bias: Optional[Tensor]) -> None:
    """The kernel generator's tensors of :func:`generated_involution2d`."""
    for name, t in (('reduced', reduced), ('weight', weight), ('bias', bias)):
        if t is None and name == 'bias':
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got '
                             f'{type(t).__name__}.')
        if t.device != input.device or t.dtype != input.dtype:
            raise ValueError(
                f'{name} is {t.dtype} on {t.device} but input is '
                f'{input.dtype} on {input.device}; use one dtype and device.')
    if weight.dim() != 4 or weight.shape[2:] != (1, 1):
        raise ValueError(
            f'weight must be a 1x1 conv weight (G*K*K, R, 1, 1), got shape '
            f'{tuple(weight.shape)}.')
    if reduced.dim() != 4 or reduced.shape[1] != weight.shape[1]:
        raise ValueError(
            f'reduced must be (N, R, H_out, W_out) with R = weight.shape[1] '
            f'= {weight.shape[1]}, got shape {tuple(reduced.shape)}.')
    if bias is not None and tuple(bias.shape) != (weight.shape[0], ):
        raise ValueError(f'bias must have shape ({weight.shape[0]},), got '
                         f'{tuple(bias.shape)}.')


def generated_involution2d(input: Tensor,
                           reduced: Tensor,
                           weight: Tensor,
                           bias: Optional[Tensor],
                           kernel_size: int,
                           stride: int = 1,
                           padding: Optional[int] = None,
                           dilation: int = 1) -> Tensor:
    """:func:`involution2d` with the kernel ``conv2d(reduced, weight, bias)``.

    Equal to ``involution2d(input, F.conv2d(reduced, weight, bias), ...)``,
    without keeping the kernel tensor: on CPU tensors the C++ kernels
    generate it chunk by chunk inside the aggregation and, in the backward
    pass, band by band with its gradient (neither ever a whole tensor); the
    other backends recompute it in the backward pass.

    Args:
        input: (N, C, H, W).
        reduced: (N, R, H_out, W_out), the kernel generator's features.
        weight: (G*K*K, R, 1, 1), the generator's last 1x1 conv.
        bias: (G*K*K,) or None.
        kernel_size, stride, padding, dilation: as for :func:`involution2d`.

    Returns:
        (N, C, H_out, W_out), in the input's memory format.
    """
    kernel_size, stride, padding, dilation = _window_args(
        kernel_size, stride, padding, dilation)
    if (isinstance(input, Tensor)
            and torch.is_autocast_enabled(input.device.type)):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, reduced, weight = (
            t.to(dtype) if isinstance(t, Tensor) else t
            for t in (input, reduced, weight))
        bias = bias.to(dtype) if isinstance(bias, Tensor) else bias
    _check_tensor('input', input, 'input (N, C, H, W)')
    _check_generator(input, reduced, weight, bias)
    _check_shapes(input.shape,
                  (reduced.shape[0], weight.shape[0], *reduced.shape[2:]),
                  kernel_size, stride, padding, dilation)
    return _generated_involution2d_op(input, reduced, weight, bias,
                                      kernel_size, stride, padding, dilation,
                                      select_backend(input.device))
