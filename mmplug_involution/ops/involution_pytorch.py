"""Involution in plain PyTorch ops, without the unfold tensor.

The K*K taps are visited one at a time: for tap (u, v) the input rows/columns it reads are
a strided view of the input, so each tap is one fused multiply-add into the output
(``addcmul_``) with the kernel slice broadcast over the group's channels. Peak extra
memory is the output itself (plus one output-sized temporary per tap in the kernel
gradient), instead of the N*C*K*K*H_out*W_out unfold tensor. Works on any device; the CPU
backend of :func:`mmplug_involution.ops.involution2d`, and the CUDA fallback when CuPy is
missing.

Half and bfloat16 inputs are computed in float32 and cast back, so accumulation is float32.
"""
import torch
from torch import Tensor

__all__ = ['involution_forward_pytorch', 'involution_backward_pytorch']


def _tap_range(out_len: int, in_len: int, offset: int, stride: int):
    """Output positions ``o`` whose input position ``o * stride + offset`` is in range.

    Returns ``(out_slice, in_slice)`` or ``None`` when the tap reads only padding.
    """
    # smallest o with o * stride + offset >= 0
    first = max(0, (-offset + stride - 1) // stride)
    last = min(out_len - 1, (in_len - 1 - offset) // stride)
    if last < first:
        return None
    in_first = first * stride + offset
    in_last = last * stride + offset
    return slice(first, last + 1), slice(in_first, in_last + 1, stride)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _taps(kernel_size, stride, padding, dilation, out_hw, in_hw):
    """Yield ``(tap, out_rows, out_cols, in_rows, in_cols)`` for taps that read input."""
    for u in range(kernel_size):
        rows = _tap_range(out_hw[0], in_hw[0], u * dilation - padding, stride)
        if rows is None:
            continue
        for v in range(kernel_size):
            cols = _tap_range(out_hw[1], in_hw[1], v * dilation - padding,
                              stride)
            if cols is None:
                continue
            yield u * kernel_size + v, rows[0], cols[0], rows[1], cols[1]


def involution_forward_pytorch(input: Tensor, kernel: Tensor, kernel_size: int,
                               stride: int, padding: int,
                               dilation: int) -> Tensor:
    """Involution forward. input (N, C, H, W), kernel (N, G*K*K, Ho, Wo) -> (N, C, Ho, Wo)."""
    n, c, h, w = input.shape
    ho, wo = kernel.shape[-2:]
    groups = kernel.shape[1] // (kernel_size * kernel_size)
    acc = _acc_dtype(input.dtype)
    x = input.to(acc).reshape(n, groups, c // groups, h, w)
    k = kernel.to(acc).reshape(n, groups, kernel_size * kernel_size, 1, ho, wo)
    out = x.new_zeros(n, groups, c // groups, ho, wo)
    for tap, oi, oj, ii, ij in _taps(kernel_size, stride, padding, dilation,
                                     (ho, wo), (h, w)):
        out[..., oi, oj].addcmul_(x[..., ii, ij], k[:, :, tap, :, oi, oj])
    return out.view(n, c, ho, wo).to(input.dtype)


def involution_backward_pytorch(grad_output: Tensor, input: Tensor,
                                kernel: Tensor, kernel_size: int, stride: int,
                                padding: int, dilation: int):
    """Gradients ``(grad_input, grad_kernel)`` shaped like ``input`` and ``kernel``."""
    n, c, h, w = input.shape
    ho, wo = kernel.shape[-2:]
    groups = kernel.shape[1] // (kernel_size * kernel_size)
    acc = _acc_dtype(input.dtype)
    x = input.to(acc).reshape(n, groups, c // groups, h, w)
    k = kernel.to(acc).reshape(n, groups, kernel_size * kernel_size, 1, ho, wo)
    gy = grad_output.to(acc).reshape(n, groups, c // groups, ho, wo)
    grad_x = x.new_zeros(x.shape)
    grad_k = k.new_zeros(n, groups, kernel_size * kernel_size, ho, wo)
    for tap, oi, oj, ii, ij in _taps(kernel_size, stride, padding, dilation,
                                     (ho, wo), (h, w)):
        gy_tap = gy[..., oi, oj]
        grad_x[..., ii, ij].addcmul_(gy_tap, k[:, :, tap, :, oi, oj])
        grad_k[:, :, tap, oi, oj] = (gy_tap * x[..., ii, ij]).sum(2)
    return (grad_x.view(n, c, h, w).to(input.dtype),
            grad_k.view(kernel.shape).to(kernel.dtype))
