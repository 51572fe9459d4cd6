"""A convolution with a different kernel for every sample of a batch."""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from .involution import memory_format_of

IntPair = Union[int, Tuple[int, int]]


def per_sample_conv2d(x: Tensor,
                      weight: Tensor,
                      bias: Optional[Tensor] = None,
                      stride: IntPair = 1,
                      padding: IntPair = 0,
                      dilation: IntPair = 1,
                      groups: int = 1) -> Tensor:
    """Convolve sample n with its own kernel ``weight[n]``, as ONE conv.

    The batch is folded into the channels (batch-as-groups): a single grouped
    convolution with ``groups = N * groups`` computes all N convolutions.

    Args:
        x (Tensor): (N, C_in, H, W).
        weight (Tensor): (N, C_out, C_in / groups, kh, kw), one kernel per
            sample.
        bias (Tensor, optional): (N, C_out).
        stride, padding, dilation, groups: as ``F.conv2d``.

    Returns:
        Tensor: (N, C_out, H_out, W_out) in x's memory format (the grouped
        conv runs on an NCHW view: a channels_last x is copied once in and
        the output once out); sample n equals
        ``F.conv2d(x[n:n+1], weight[n], bias[n], ...)``.

    In an ONNX export the batch cannot be folded into ``groups`` (an ONNX
    ``Conv``'s group count is fixed, the batch axis may not be): there it is
    :func:`per_sample_conv2d_by_taps`.
    """
    batch, in_channels = x.shape[:2]
    if weight.dim() != 5 or weight.shape[0] != batch:
        raise ValueError(f'weight must be (N={batch}, C_out, C_in/groups, kh, '
                         f'kw), one kernel per sample; got '
                         f'{tuple(weight.shape)}.')
    if weight.shape[2] * groups != in_channels:
        raise ValueError(f'weight has {weight.shape[2]} input channels per '
                         f'group; with groups={groups} x needs '
                         f'{weight.shape[2] * groups} channels, got '
                         f'{in_channels}.')
    if torch.onnx.is_in_onnx_export():
        return per_sample_conv2d_by_taps(x, weight, bias, stride, padding,
                                         dilation, groups)
    out_channels = weight.shape[1]
    out = F.conv2d(
        x.reshape(1, batch * in_channels, *x.shape[2:]),
        weight.reshape(batch * out_channels, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1), stride, padding, dilation,
        batch * groups)
    return out.view(
        batch, out_channels,
        *out.shape[2:]).contiguous(memory_format=memory_format_of(x))


def per_sample_conv2d_by_taps(x: Tensor,
                              weight: Tensor,
                              bias: Optional[Tensor] = None,
                              stride: IntPair = 1,
                              padding: IntPair = 0,
                              dilation: IntPair = 1,
                              groups: int = 1) -> Tensor:
    """:func:`per_sample_conv2d` as one batched matrix product per kernel
    tap, ``(N, G, C_out/G, C_in/G) @ (N, G, C_in/G, H_out*W_out)``, summed:
    any batch size, no unfolded (N, C_in*kh*kw, ...) tensor. Same arguments
    and result; the form the ONNX export takes."""
    (sh, sw), (ph, pw), (dh,
                         dw) = _pair(stride), _pair(padding), _pair(dilation)
    batch, _, height, width = x.shape
    out_channels, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
    # window ends linear in the input size (no floor divisions to reason
    # about when the export traces symbolic sizes); the step gives H_out
    span_h, span_w = height + 2 * ph - dh * (kh - 1), width + 2 * pw - dw * (
        kw - 1)
    padded = F.pad(x,
                   (pw, pw, ph, ph)).reshape(batch, groups, -1,
                                             height + 2 * ph, width + 2 * pw)
    taps = weight.reshape(batch, groups, out_channels // groups, -1, kh, kw)
    out = None
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, :, i * dh:i * dh + span_h:sh,
                            j * dw:j * dw + span_w:sw]
            term = taps[..., i, j] @ window.flatten(3)
            out = term if out is None else out + term
    out = out.reshape(batch, out_channels, *window.shape[3:])
    if bias is not None:
        out = out + bias[:, :, None, None]
    return out.contiguous(memory_format=memory_format_of(x))
