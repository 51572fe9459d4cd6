"""An independent float64 reference for involution.

It pads the input explicitly and gathers each tap with index tensors (no
unfold, no slicing arithmetic shared with the backends), so it can judge
every backend: the test suite compares each fast path with it, and the GPU
kit's kernel sanitizer (``tools/dev/gpu/sanitize_kernels.py``) loads it by
itself. It is differentiable, so its autograd gradients are the reference
gradients. Imports only torch.
"""
import torch
import torch.nn.functional as F

__all__ = ['involution_reference', 'output_size']


def output_size(size, kernel_size, stride, padding, dilation):
    """floor((size + 2p - d(K-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation *
            (kernel_size - 1) - 1) // stride + 1


def involution_reference(x,
                         w,
                         kernel_size,
                         stride=1,
                         padding=None,
                         dilation=1):
    """x (N, C, H, W), w (N, G*K*K, Ho, Wo) -> (N, C, Ho, Wo), in float64."""
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    x, w = x.double(), w.double()
    n, c, h, wd = x.shape
    ho = output_size(h, kernel_size, stride, padding, dilation)
    wo = output_size(wd, kernel_size, stride, padding, dilation)
    groups = w.shape[1] // kernel_size**2
    # pad enough on every side for any tap of any output pixel
    margin = padding + dilation * kernel_size + stride
    xp = F.pad(x, (margin, margin, margin, margin))
    w_per_channel = w.reshape(n, groups, 1, kernel_size**2, ho,
                              wo).expand(n, groups, c // groups,
                                         kernel_size**2, ho,
                                         wo).reshape(n, c, kernel_size**2, ho,
                                                     wo)
    out = x.new_zeros(n, c, ho, wo)
    rows_base = torch.arange(ho) * stride - padding + margin
    cols_base = torch.arange(wo) * stride - padding + margin
    for u in range(kernel_size):
        for v in range(kernel_size):
            rows = rows_base + u * dilation
            cols = cols_base + v * dilation
            patch = xp.index_select(2, rows).index_select(3, cols)
            out = out + patch * w_per_channel[:, :, u * kernel_size + v]
    return out
