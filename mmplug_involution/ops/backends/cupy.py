"""The ``cupy`` backend: the involution CUDA kernels, launched through CuPy.

CUDA tensors; the default there. The kernels live in
``csrc/cupy/involution_kernels.cu``.

The source is compiled once per process by NVRTC into one module holding every
(kernel, dtype, index type) variant; CuPy keeps the compiled binary in its
on-disk kernel cache, so later processes do not recompile. Shapes are kernel
arguments, so no input shape ever triggers a compile. Kernels run on torch's
current stream of the tensors' device and write every output element (no
atomics: deterministic).
"""
import functools
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from . import unfused

__all__ = [
    'NAME', 'DEVICE_TYPE', 'unavailable_reason', 'forward', 'backward',
    'generated_forward', 'generated_backward', 'KERNEL_SOURCE_PATH',
    'NVRTC_OPTIONS', 'kernel_name_expressions', 'cupy_import_error'
]

NAME = 'cupy'
DEVICE_TYPE = 'cuda'
KERNEL_SOURCE_PATH = (
    Path(__file__).parents[1] / 'csrc' / 'cupy' / 'involution_kernels.cu')
NVRTC_OPTIONS = ('--std=c++14', )
KERNEL_NAMES = ('involution_forward', 'involution_grad_input',
                'involution_grad_kernel')
CUDA_TYPES = {
    torch.float32: 'float',
    torch.float64: 'double',
    torch.float16: 'half_t',
    torch.bfloat16: 'bfloat16_t',
}
INDEX_TYPES = ('int', 'long long')
# 32-bit indexing is used while every tensor has at most this many elements,
# which leaves headroom for the grid-stride increment of the loop index.
MAX_INT32_NUMEL = 2**30
THREADS_PER_BLOCK = 256
BLOCKS_PER_SM = 32

_module = None
_functions: Dict[Tuple[str, int], object] = {}
_sm_counts: Dict[int, int] = {}


def kernel_name_expressions():
    """Every template instantiation the module provides.

    E.g. ``f<float, int>``.
    """
    return [
        f'{name}<{ctype}, {itype}>' for name in KERNEL_NAMES
        for ctype in CUDA_TYPES.values() for itype in INDEX_TYPES
    ]


@functools.lru_cache(maxsize=None)
def cupy_import_error() -> Optional[str]:
    """``None`` if CuPy imports, else a message saying what to install."""
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        cuda = torch.version.cuda or '12'
        major = cuda.split('.')[0]
        return (
            f'CuPy is not installed ({exc}). The fast involution CUDA kernels '
            f'need it: pip install "mmplug-involution[cuda{major}]" (CuPy '
            f'and NVRTC for CUDA {major}; torch was built for CUDA {cuda}).')
    return None


def unavailable_reason(device: torch.device) -> Optional[str]:
    """``None`` if the kernels run tensors on ``device``, else why not and
    what to do."""
    if device.type != DEVICE_TYPE:
        return (f'The involution CUDA kernels need CUDA tensors, got tensors '
                f'on {device}.')
    return cupy_import_error()


def _get_function(name: str, dtype: torch.dtype, index_type: str,
                  device_index: int):
    import cupy
    key = (f'{name}<{CUDA_TYPES[dtype]}, {index_type}>', device_index)
    fn = _functions.get(key)
    if fn is None:
        global _module
        if _module is None:
            _module = cupy.RawModule(
                code=KERNEL_SOURCE_PATH.read_text(),
                options=NVRTC_OPTIONS,
                name_expressions=kernel_name_expressions())
        with cupy.cuda.Device(device_index):
            fn = _module.get_function(key[0])
        _functions[key] = fn
    return fn


def _cupy_stream(cupy, device: torch.device):
    """torch's current stream on ``device`` as a CuPy stream.

    Works with CuPy 13 and 14.
    """
    torch_stream = torch.cuda.current_stream(device)
    if hasattr(cupy.cuda.Stream, 'from_external'):  # CuPy >= 14
        return cupy.cuda.Stream.from_external(torch_stream)
    return cupy.cuda.ExternalStream(torch_stream.cuda_stream, device.index)


def _launch(name: str, out: Tensor, tensors, sizes) -> None:
    """Run kernel ``name`` writing ``out``.

    One thread per element, grid-stride.
    """
    import cupy
    device = out.device.index
    largest = max(t.numel() for t in (out, *tensors))
    index_type = 'int' if largest <= MAX_INT32_NUMEL else 'long long'
    scalar = cupy.int32 if index_type == 'int' else cupy.int64
    fn = _get_function(name, out.dtype, index_type, device)
    if device not in _sm_counts:
        _sm_counts[device] = torch.cuda.get_device_properties(
            device).multi_processor_count
    blocks = min(
        math.ceil(out.numel() / THREADS_PER_BLOCK),
        _sm_counts[device] * BLOCKS_PER_SM)
    args = [cupy.uint64(t.data_ptr()) for t in (*tensors, out)]
    args += [scalar(v) for v in (out.numel(), *sizes)]
    # CuPy launches on its current stream: make that torch's current stream.
    with cupy.cuda.Device(device), _cupy_stream(cupy, out.device):
        fn((blocks, ), (THREADS_PER_BLOCK, ), tuple(args))


def _sizes(input: Tensor, kernel: Tensor, kernel_size: int, stride: int,
           padding: int, dilation: int):
    n, c, h, w = input.shape
    groups = kernel.shape[1] // (kernel_size * kernel_size)
    return (c, h, w, kernel.shape[2], kernel.shape[3], groups, kernel_size,
            stride, padding, dilation)


def forward(input: Tensor,
            kernel: Tensor,
            kernel_size: int,
            stride: int,
            padding: int,
            dilation: int,
            out: Optional[Tensor] = None) -> Tensor:
    """Forward on CUDA.

    input (N, C, H, W), kernel (N, G*K*K, Ho, Wo) -> (N, C, Ho, Wo).

    ``out`` (contiguous, right shape and dtype) is written in full if given.
    """
    input, kernel = input.contiguous(), kernel.contiguous()
    if out is None:
        out = input.new_empty(input.shape[0], input.shape[1],
                              *kernel.shape[-2:])
    if out.numel():
        _launch('involution_forward', out, (input, kernel),
                _sizes(input, kernel, kernel_size, stride, padding, dilation))
    return out


def backward(grad_output: Tensor,
             input: Tensor,
             kernel: Tensor,
             kernel_size: int,
             stride: int,
             padding: int,
             dilation: int,
             grad_input: Optional[Tensor] = None,
             grad_kernel: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Gradients ``(grad_input, grad_kernel)`` on CUDA.

    Each is written in full.
    """
    grad_output = grad_output.contiguous()
    input, kernel = input.contiguous(), kernel.contiguous()
    sizes = _sizes(input, kernel, kernel_size, stride, padding, dilation)
    if grad_input is None:
        grad_input = torch.empty_like(input)
    if grad_kernel is None:
        grad_kernel = torch.empty_like(kernel)
    if grad_input.numel():
        _launch('involution_grad_input', grad_input, (grad_output, kernel),
                sizes)
    if grad_kernel.numel():
        _launch('involution_grad_kernel', grad_kernel, (grad_output, input),
                sizes)
    return grad_input, grad_kernel


# the kernel ``conv2d(reduced, weight, bias)`` written (and recomputed in the
# backward pass), then :func:`forward` / :func:`backward`
generated_forward, generated_backward = unfused.bind(forward, backward)
