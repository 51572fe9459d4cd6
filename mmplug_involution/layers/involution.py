"""The involution layer (a kernel generator plus :func:`involution2d`) and
its ConvModule-like variant with an output norm and activation."""
from typing import Optional

import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from ..ops import involution2d
from ..registry import MODELS


@MODELS.register_module()
class Involution(BaseModule):
    """Involution (Li et al., CVPR 2021) with its kernel generator.

    The kernel for each output pixel is generated from the input at that pixel
    (average-pooled by ``stride`` first): ``conv1`` reduces C -> C/r channels
    (1x1 conv, norm, activation) and ``conv2`` spans C/r -> G*K*K (1x1 conv
    with bias). Submodule names match the reference implementation, so its
    checkpoints load key for key.

    Args:
        channels (int): C, input and output channels.
        kernel_size (int): K, odd. Default 7.
        stride (int): s. Default 1.
        group_channels (int): channels sharing one kernel;
            G = C / group_channels. Default 16.
        reduction_ratio (int): r. Default 4.
        dilation (int): d; padding is d*(K-1)/2, so H_out = ceil(H / s).
            Default 1.
        norm_cfg (dict): norm after ``conv1``. Default ``dict(type='BN')``.
        act_cfg (dict): activation after ``conv1``.
            Default ``dict(type='ReLU')``.
        init_cfg (dict, optional): mmengine initialisation config.

    Shapes:
        (N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s)).

    Example:
        >>> import torch
        >>> layer = Involution(64, kernel_size=7, stride=2)
        >>> layer(torch.rand(2, 64, 57, 40)).shape
        torch.Size([2, 64, 29, 20])
    """

    def __init__(self,
                 channels: int,
                 kernel_size: int = 7,
                 stride: int = 1,
                 group_channels: int = 16,
                 reduction_ratio: int = 4,
                 dilation: int = 1,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}.')
        if channels % group_channels != 0:
            raise ValueError(f'channels={channels} must be divisible by '
                             f'group_channels={group_channels}.')
        if channels % reduction_ratio != 0:
            raise ValueError(f'channels={channels} must be divisible by '
                             f'reduction_ratio={reduction_ratio}.')
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.group_channels = group_channels
        self.groups = channels // group_channels
        self.conv1 = ConvModule(
            channels,
            channels // reduction_ratio,
            1,
            bias=False,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        self.conv2 = ConvModule(
            channels // reduction_ratio,
            kernel_size * kernel_size * self.groups,
            1,
            bias=True,
            norm_cfg=None,
            act_cfg=None)
        # ceil_mode: odd sizes pool to ceil(H / s), the involution's output
        # size; the last window averages only the pixels it covers.
        self.avgpool = nn.AvgPool2d(
            stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def generate_kernel(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> the (N, G*K*K, ceil(H / s), ceil(W / s)) kernel."""
        return self.conv2(self.conv1(self.avgpool(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s))."""
        return involution2d(
            x,
            self.generate_kernel(x),
            self.kernel_size,
            self.stride,
            dilation=self.dilation)


class InvolutionModule(Involution):
    """An :class:`Involution` followed by an optional norm and activation.

    The involution counterpart of mmcv's ``ConvModule`` (order: involution,
    norm, activation). ``norm_cfg`` and ``act_cfg`` keep their
    :class:`Involution` meaning (the kernel generator's); the norm and
    activation applied to the output are ``out_norm_cfg`` and
    ``out_act_cfg``. The state dict keeps Involution's layout (``conv1.*``,
    ``conv2.*``), plus ``norm.*`` when ``out_norm_cfg`` is set.

    Args:
        channels (int): C, input and output channels.
        out_norm_cfg (dict, optional): norm on the output. Default None.
        out_act_cfg (dict, optional): activation on the output (after the
            norm). Default None.
        **kwargs: the other :class:`Involution` arguments.

    Shapes:
        (N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s)).

    Example:
        >>> import torch
        >>> layer = InvolutionModule(32, out_act_cfg=dict(type='ReLU'))
        >>> layer(torch.rand(2, 32, 25, 19)).shape
        torch.Size([2, 32, 25, 19])
    """

    def __init__(self,
                 channels: int,
                 out_norm_cfg: Optional[dict] = None,
                 out_act_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(channels, **kwargs)
        self.norm = (
            build_norm_layer(out_norm_cfg, channels)[1]
            if out_norm_cfg is not None else nn.Identity())
        self.activate = (
            build_activation_layer(out_act_cfg)
            if out_act_cfg is not None else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s))."""
        return self.activate(self.norm(super().forward(x)))
