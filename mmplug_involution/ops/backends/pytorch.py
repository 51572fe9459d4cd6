"""The ``pytorch`` backend: involution in plain PyTorch ops, no unfold tensor.

The K*K taps are visited one at a time. Tap (u, v) reads input rows
``i*s + u*d - p``: with the input split into its s x s stride phases
(``x[..., a::s, b::s]``, a view when s = 1, one input-sized copy otherwise),
those rows are a unit-stride slice of one phase. Each tap is then one fused
multiply-add into the output (``addcmul_``), the kernel slice broadcast over
the group's channels; the kernel gradient is accumulated the same way, one
channel at a time. Peak extra memory is the output itself (the gradients in
the backward pass) instead of the N*C*K*K*H_out*W_out unfold tensor. Works on
any device: the fallback of :func:`mmplug_involution.ops.involution2d` on
CPU tensors when the C++ kernels are not built and on CUDA tensors when CuPy
is missing, and the default on any other device.

Half and bfloat16 inputs are computed in float32 and cast back, so
accumulation is float32.
"""
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from . import unfused

__all__ = [
    'NAME', 'DEVICE_TYPE', 'unavailable_reason', 'forward', 'backward',
    'generated_forward', 'generated_backward'
]

NAME = 'pytorch'
DEVICE_TYPE = None  # any


def unavailable_reason(device: torch.device) -> Optional[str]:
    """Always ``None``: plain PyTorch ops run on every device."""
    return None


class _Tap(NamedTuple):
    """What one kernel tap reads: output window, stride phase, phase window."""
    index: int  # u * K + v
    out_rows: slice
    out_cols: slice
    phase: Tuple[int, int]  # (row phase, column phase), each in [0, s)
    in_rows: slice  # unit-stride, in phase coordinates
    in_cols: slice


def _phase_window(out_len: int, in_len: int, offset: int,
                  stride: int) -> Optional[Tuple[slice, int, slice]]:
    """Outputs ``o`` whose input ``o * stride + offset`` is in the input.

    That input is row ``o + offset // stride`` of phase ``offset % stride``.
    Returns ``(out_slice, phase, phase_slice)``, or ``None`` if the tap reads
    only padding.
    """
    phase, shift = offset % stride, offset // stride
    phase_len = (in_len - phase + stride - 1) // stride
    first, last = max(0, -shift), min(out_len, phase_len - shift) - 1
    if last < first:
        return None
    return (slice(first,
                  last + 1), phase, slice(first + shift, last + 1 + shift))


def _taps(kernel_size: int, stride: int, padding: int, dilation: int,
          out_hw: Tuple[int, int], in_hw: Tuple[int, int]) -> Iterator[_Tap]:
    """The taps that read at least one input pixel."""
    for u in range(kernel_size):
        rows = _phase_window(out_hw[0], in_hw[0], u * dilation - padding,
                             stride)
        if rows is None:
            continue
        for v in range(kernel_size):
            cols = _phase_window(out_hw[1], in_hw[1], v * dilation - padding,
                                 stride)
            if cols is None:
                continue
            yield _Tap(u * kernel_size + v, rows[0], cols[0],
                       (rows[1], cols[1]), rows[2], cols[2])


def _phases(x: Tensor, stride: int) -> List[List[Tensor]]:
    """``x[..., a::s, b::s]`` for every phase (a, b); contiguous if s > 1."""
    if stride == 1:
        return [[x]]
    return [[x[..., a::stride, b::stride].contiguous() for b in range(stride)]
            for a in range(stride)]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _grouped(input: Tensor, kernel: Tensor, kernel_size: int):
    """input as (N, G, C/G, H, W) and kernel as (N, G, K*K, 1, Ho, Wo)."""
    n, c, h, w = input.shape
    ho, wo = kernel.shape[-2:]
    groups = kernel.shape[1] // (kernel_size * kernel_size)
    acc = _acc_dtype(input.dtype)
    x = input.to(acc).reshape(n, groups, c // groups, h, w)
    k = kernel.to(acc).reshape(n, groups, kernel_size * kernel_size, 1, ho, wo)
    return x, k


def forward(input: Tensor, kernel: Tensor, kernel_size: int, stride: int,
            padding: int, dilation: int) -> Tensor:
    """Involution forward.

    input (N, C, H, W), kernel (N, G*K*K, Ho, Wo) -> (N, C, Ho, Wo).
    """
    x, k = _grouped(input, kernel, kernel_size)
    n, groups, cg, h, w = x.shape
    ho, wo = k.shape[-2:]
    phases = _phases(x, stride)
    out = x.new_zeros(n, groups, cg, ho, wo)
    for tap in _taps(kernel_size, stride, padding, dilation, (ho, wo), (h, w)):
        a, b = tap.phase
        out[..., tap.out_rows, tap.out_cols].addcmul_(
            phases[a][b][..., tap.in_rows, tap.in_cols],
            k[:, :, tap.index, :, tap.out_rows, tap.out_cols])
    return out.view(n, groups * cg, ho, wo).to(input.dtype)


def backward(grad_output: Tensor, input: Tensor, kernel: Tensor,
             kernel_size: int, stride: int, padding: int,
             dilation: int) -> Tuple[Tensor, Tensor]:
    """Gradients ``(grad_input, grad_kernel)`` shaped as input and kernel."""
    x, k = _grouped(input, kernel, kernel_size)
    n, groups, cg, h, w = x.shape
    ho, wo = k.shape[-2:]
    gy = grad_output.to(x.dtype).reshape(n, groups, cg, ho, wo)
    phases = _phases(x, stride)
    grad_phases = [[torch.zeros_like(p) for p in row] for row in phases]
    grad_k = k.new_zeros(n, groups, kernel_size * kernel_size, ho, wo)
    for tap in _taps(kernel_size, stride, padding, dilation, (ho, wo), (h, w)):
        a, b = tap.phase
        gy_tap = gy[..., tap.out_rows, tap.out_cols]
        x_tap = phases[a][b][..., tap.in_rows, tap.in_cols]
        grad_phases[a][b][..., tap.in_rows, tap.in_cols].addcmul_(
            gy_tap, k[:, :, tap.index, :, tap.out_rows, tap.out_cols])
        # sum over the group's channels one channel at a time: no temporary,
        # and faster than multiply-then-reduce on CPU
        grad_k_tap = grad_k[:, :, tap.index, tap.out_rows, tap.out_cols]
        for c in range(cg):
            grad_k_tap.addcmul_(gy_tap[:, :, c], x_tap[:, :, c])
    if stride == 1:
        grad_x = grad_phases[0][0]
    else:
        grad_x = x.new_empty(x.shape)
        for a, row in enumerate(grad_phases):
            for b, grad_phase in enumerate(row):
                grad_x[..., a::stride, b::stride] = grad_phase
    return (grad_x.view(input.shape).to(input.dtype),
            grad_k.view(kernel.shape).to(kernel.dtype))


# the kernel ``conv2d(reduced, weight, bias)`` written (and recomputed in the
# backward pass), then :func:`forward` / :func:`backward`
generated_forward, generated_backward = unfused.bind(forward, backward)
