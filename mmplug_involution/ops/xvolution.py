"""Functional cores of X-volution (Chen et al. 2021).

* :func:`pixel_shift_attention`: the pixel-shift self-attention (PSSA)
  kernel, a softmax over each output pixel's K x K neighbourhood of
  query-key products, one per channel group.
* :func:`xvolution_fused2d`: the deployed X-volution, ONE dynamic
  convolution ``y_c(p) = sum_{ci,delta} W[c, ci, delta] x_ci(p + delta)
  + scale_c * sum_delta attention[g(c), delta](p) x_c(p + delta) + b_c``:
  static weights plus a content-dependent local kernel.

Both read the neighbourhood ``p*s + delta*d`` with zero padding
``d*(K-1)/2``, so that their output grid is the involution's and the
convolution's: ``H_out = ceil(H / s)``.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .involution import involution2d, involution_output_size

__all__ = ['pixel_shift_attention', 'xvolution_fused2d']


def _shifted_views(key: Tensor, kernel_size: int, stride: int, dilation: int,
                   out_size):
    """Yield ``key`` read at ``p*s + delta*d`` for every offset delta.

    Views of the zero-padded key, each (N, C, H_out, W_out), in offset
    order ``u*K + v``.
    """
    pad = dilation * (kernel_size - 1) // 2
    padded = F.pad(key, (pad, pad, pad, pad))
    height, width = out_size
    for u in range(kernel_size):
        for v in range(kernel_size):
            top, left = u * dilation, v * dilation
            yield padded[:, :, top:top + (height - 1) * stride + 1:stride,
                         left:left + (width - 1) * stride + 1:stride]


def _inside_mask(in_size, kernel_size, stride, dilation, out_size, device):
    """(K*K, H_out, W_out) bool: does offset delta stay inside the image?"""
    ones = torch.ones(1, 1, *in_size, device=device)
    views = _shifted_views(ones, kernel_size, stride, dilation, out_size)
    return torch.cat([view[0] for view in views]).bool()


def pixel_shift_attention(query: Tensor,
                          key: Tensor,
                          logit_scale: Tensor,
                          kernel_size: int = 3,
                          stride: int = 1,
                          dilation: int = 1) -> Tensor:
    """Pixel-shift self-attention over each output pixel's neighbourhood.

    ``logit[g, delta](p) = logit_scale[g, delta] / sqrt(C/G) *
    sum_{c in g} query_c(p) * key_c(p*s + delta*d)``, softmax over the K*K
    offsets delta; offsets that leave the image are masked out (the centre
    never does). Memory is linear in the number of pixels: the products are
    formed one shifted key at a time.

    Args:
        query: (N, C, H_out, W_out), already at the output positions.
        key: (N, C, H, W).
        logit_scale: (G, K*K), learnable per group and offset; G divides C.
        kernel_size: K, odd. stride: s. dilation: d.

    Returns:
        (N, G*K*K, H_out, W_out): the kernel layout of :func:`involution2d`.
    """
    if kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be odd, got {kernel_size}.')
    if query.dim() != 4 or key.dim() != 4:
        raise ValueError('query and key must be (N, C, H, W); got '
                         f'{tuple(query.shape)} and {tuple(key.shape)}.')
    batch, channels = key.shape[:2]
    out_size = tuple(
        involution_output_size(size, kernel_size, stride,
                               dilation * (kernel_size - 1) // 2, dilation)
        for size in key.shape[2:])
    if tuple(query.shape) != (batch, channels) + out_size:
        raise ValueError(f'query must be {(batch, channels) + out_size} for '
                         f'key {tuple(key.shape)} at stride {stride}; got '
                         f'{tuple(query.shape)}.')
    groups = logit_scale.shape[0]
    if (logit_scale.dim() != 2 or logit_scale.shape[1] != kernel_size**2
            or channels % groups):
        raise ValueError(f'logit_scale must be (G, {kernel_size**2}) with G '
                         f'dividing C={channels}; got '
                         f'{tuple(logit_scale.shape)}.')
    grouped = query.reshape(batch, groups, channels // groups, *out_size)
    logits = torch.stack([(grouped * view.reshape(grouped.shape)).sum(2)
                          for view in _shifted_views(key, kernel_size, stride,
                                                     dilation, out_size)],
                         2)  # (N, G, K*K, H_out, W_out)
    logits = logits * (logit_scale / math.sqrt(channels // groups))[None, :, :,
                                                                    None, None]
    inside = _inside_mask(key.shape[2:], kernel_size, stride, dilation,
                          out_size, key.device)
    logits = logits.masked_fill(~inside, float('-inf'))
    return logits.softmax(2).reshape(batch, groups * kernel_size**2, *out_size)


def xvolution_fused2d(input: Tensor,
                      weight: Tensor,
                      bias: Optional[Tensor],
                      attention: Tensor,
                      attention_scale: Tensor,
                      stride: int = 1,
                      dilation: int = 1) -> Tensor:
    """The deployed X-volution: static plus content-dependent local kernel.

    ``y_c(p) = sum_{ci, delta} weight[c, ci, delta] x_ci(p*s + delta*d)
    + attention_scale[c] * sum_delta attention[g(c), delta](p)
    x_c(p*s + delta*d) + bias[c]``, padding ``d*(K-1)/2``; the dynamic part
    runs on the involution kernels (CUDA through CuPy, or the lean CPU path).

    Args:
        input: (N, C, H, W).
        weight: (C, C, K, K), K odd. bias: (C,) or None.
        attention: (N, G*K*K, H_out, W_out), G dividing C.
        attention_scale: (C,).

    Returns:
        (N, C, H_out, W_out), ``H_out = ceil(H / s)``.
    """
    if weight.dim() != 4 or weight.shape[0] != weight.shape[1] or \
            weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        raise ValueError('weight must be (C, C, K, K) with K odd; got '
                         f'{tuple(weight.shape)}.')
    channels, kernel_size = weight.shape[0], int(weight.shape[2])
    if input.dim() != 4 or input.shape[1] != channels:
        raise ValueError(f'input must be (N, {channels}, H, W) for weight '
                         f'{tuple(weight.shape)}; got {tuple(input.shape)}.')
    if attention_scale.shape != (channels, ):
        raise ValueError(f'attention_scale must be ({channels},); got '
                         f'{tuple(attention_scale.shape)}.')
    padding = dilation * (kernel_size - 1) // 2
    static = F.conv2d(input, weight, bias, stride, padding, dilation)
    dynamic = involution2d(input, attention, kernel_size, stride, padding,
                           dilation)
    return torch.addcmul(static, attention_scale[:, None, None], dynamic)
