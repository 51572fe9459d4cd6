"""A convolution with a different kernel for every sample of a batch."""
from typing import Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor

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
    out_channels = weight.shape[1]
    out = F.conv2d(
        x.reshape(1, batch * in_channels, *x.shape[2:]),
        weight.reshape(batch * out_channels, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1), stride, padding,
        dilation, batch * groups)
    return out.view(batch, out_channels, *out.shape[2:]).contiguous(
        memory_format=memory_format_of(x))
