"""The involution layer (a kernel generator plus :func:`involution2d`) and
its ConvModule-like variant with an output norm and activation."""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule, initialize
from torch import Tensor

from ..ops import generated_involution2d
from ..registry import MODELS
from .conv_attributes import ConvAttributesMixin


def _single_int(name: str, value: Union[int, Sequence[int]]) -> int:
    """An int, or a pair of equal ints (as conv callers pass), as one int."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f'Involution needs a square {name}, got '
                             f'{tuple(value)}.')
        value = value[0]
    return value


@MODELS.register_module()
class Involution(ConvAttributesMixin, BaseModule):
    """Involution (Li et al., CVPR 2021) with its kernel generator.

    The kernel for each output pixel is generated from the input at that pixel
    (average-pooled by ``stride`` first): ``conv1`` reduces C -> C/r channels
    (1x1 conv, norm, activation) and ``conv2`` spans C/r -> G*K*K (1x1 conv
    with bias). Submodule names match the reference implementation, so its
    checkpoints load key for key.

    The constructor has ``nn.Conv2d``'s signature, so ``build_conv_layer``
    (``dcn=dict(type='Involution')`` in a ResNet, ``conv_cfg=`` in a
    ConvModule) builds it in place of a conv. The window K is the caller's
    ``kernel_size`` unless ``window_size`` names another (the layer config's
    way to ask for RedNet's 7 where a ResNet asks for 3); the padding is then
    the one that centres the window.

    Args:
        in_channels (int): C, input channels.
        out_channels (int, optional): must equal C (an involution keeps its
            channels). Default: C.
        kernel_size (int): K, odd, unless ``window_size`` is set. Default 7.
        stride (int): s. Default 1.
        padding (int, optional): must be ``d*(K-1)/2`` (the centred window,
            so H_out = ceil(H / s)) or None; ignored when ``window_size``
            replaces the caller's window. Default None.
        dilation (int): d. Default 1.
        groups (int): must be 1: the involution's groups are set by
            ``group_channels``. Default 1.
        bias (bool): add a learnt per-channel bias to the output (``bias``
            in the state dict). Default False.
        window_size (int, optional): K, overriding ``kernel_size``.
        group_channels (int): channels sharing one kernel;
            G = C / group_channels. Default 16.
        reduction_ratio (int): r. Default 4.
        norm_cfg (dict): norm after ``conv1``. Default ``dict(type='BN')``.
        act_cfg (dict): activation after ``conv1``.
            Default ``dict(type='ReLU')``.
        init_cfg (dict, optional): mmengine initialisation config. Without
            one, ``conv2`` starts from N(0, 1 / (K*K * C/r)) weights and a
            zero bias (see :meth:`init_span_conv`).

    Shapes:
        (N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s)).

    Example:
        >>> import torch
        >>> layer = Involution(64, kernel_size=7, stride=2)
        >>> layer(torch.rand(2, 64, 57, 40)).shape
        torch.Size([2, 64, 29, 20])
        >>> from mmcv.cnn import build_conv_layer
        >>> build_conv_layer(dict(type='Involution', window_size=7), 64, 64,
        ...                  3, padding=1).kernel_size
        7
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Optional[int] = None,
                 kernel_size: int = 7,
                 stride: int = 1,
                 padding: Optional[int] = None,
                 dilation: int = 1,
                 groups: int = 1,
                 bias: bool = False,
                 *,
                 window_size: Optional[int] = None,
                 group_channels: int = 16,
                 reduction_ratio: int = 4,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        channels = in_channels
        if out_channels is not None and out_channels != channels:
            raise ValueError(
                f'an involution keeps its channels: in_channels={channels} '
                f'and out_channels={out_channels} differ (keep a conv for '
                'this layer, or change the channels to match).')
        if groups != 1:
            raise ValueError(
                f'Involution takes groups=1, got groups={groups}: its '
                'channel groups are set by group_channels (C / '
                'group_channels kernels per pixel).')
        kernel_size = _single_int('kernel_size', kernel_size)
        stride = _single_int('stride', stride)
        dilation = _single_int('dilation', dilation)
        if padding is not None:
            padding = _single_int('padding', padding)
        if window_size is None:
            centred = dilation * (kernel_size - 1) // 2
            if padding is not None and padding != centred:
                raise ValueError(
                    f'padding={padding} does not centre the {kernel_size}x'
                    f'{kernel_size} window at dilation={dilation} (an '
                    f'involution needs padding={centred}, so that its output '
                    'aligns with the kernel map it generates per pixel).')
        else:
            kernel_size = window_size
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}.')
        if channels % group_channels != 0:
            raise ValueError(f'channels={channels} must be divisible by '
                             f'group_channels={group_channels}.')
        if channels % reduction_ratio != 0:
            raise ValueError(f'channels={channels} must be divisible by '
                             f'reduction_ratio={reduction_ratio}.')
        self.channels = channels
        self.group_channels = group_channels
        self.set_conv_attributes(
            channels,
            channels,
            kernel_size,
            stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=channels // group_channels)
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
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.init_span_conv()

    def init_span_conv(self, identity: bool = False) -> None:
        """Draw ``conv2`` so that an involution does not amplify its input.

        Weights N(0, 1 / (K*K * C/r)), bias 0: the K*K taps of a pixel's
        kernel then add up to a variance of about the second moment of the
        normalised generator features (at most 1), so at initialisation the
        output is no larger than the input, as with a LeCun-initialised
        conv (ConvModule's Kaiming fan-out draw scales it up several times,
        which compounds in necks and heads without a norm).

        ``identity=True`` also sets the centre tap's bias to 1: the layer
        then starts as the identity plus that input-dependent term, a path
        along which the input reaches the output linearly from the first
        step (a stack of zero-mean involutions without one multiplies two
        near-random factors per layer).
        """
        span = self.conv2.conv
        nn.init.normal_(
            span.weight, std=(self.kernel_size**2 * span.in_channels)**-0.5)
        nn.init.zeros_(span.bias)
        if identity:
            centre = self.kernel_size**2 // 2
            with torch.no_grad():
                span.bias.view(self.groups, -1)[:, centre] = 1

    def init_weights(self) -> None:
        """mmengine's initialisation, then :meth:`init_span_conv`; with an
        ``init_cfg``, that again instead (mmcv's ConvModules redraw their
        convs after it)."""
        super().init_weights()
        if self.init_cfg is None:
            self.init_span_conv()
        elif not loads_checkpoint(self.init_cfg):
            initialize(self, self.init_cfg)

    def generate_kernel(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> the (N, G*K*K, ceil(H / s), ceil(W / s)) kernel."""
        return self.conv2(self.conv1(self.avgpool(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s)).

        Equal to ``involution2d(x, self.generate_kernel(x), ...)``; ``conv2``
        (the span conv) is applied inside the op, so that the kernel tensor
        is neither kept for the backward pass nor, on CPU in channels_last,
        ever written.
        """
        span = self.conv2.conv
        out = generated_involution2d(
            x,
            self.conv1(self.avgpool(x)),
            span.weight,
            span.bias,
            self.kernel_size,
            self.stride,
            dilation=self.dilation)
        return out if self.bias is None else out + self.bias[:, None, None]


def loads_checkpoint(init_cfg) -> bool:
    """Whether ``init_cfg`` is a ``Pretrained`` one, after which mmengine's
    ``BaseModule.init_weights`` initialises nothing else."""
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


#: The involution of the paper's necks and heads (the default of their
#: ``involution_cfg``): a 7x7 window, 16 channels a group, reduction 4, BN in
#: the kernel generator.
HEAD_INVOLUTION_CFG = dict(
    window_size=7,
    group_channels=16,
    reduction_ratio=4,
    norm_cfg=dict(type='BN'))


def involution_kwargs(involution_cfg: dict, owner: str) -> dict:
    """A copy of a neck's or head's ``involution_cfg``: :class:`Involution`
    keyword arguments, refused if it names a layer ``type``."""
    if 'type' in involution_cfg:
        raise ValueError(
            f'{owner}: involution_cfg holds Involution\'s own arguments '
            f'(window_size, group_channels, reduction_ratio, norm_cfg, '
            f'act_cfg); the layer type is fixed, remove type='
            f'{involution_cfg["type"]!r}.')
    return dict(involution_cfg)


class InvolutionModule(Involution):
    """An :class:`Involution` followed by an optional norm and activation.

    The involution counterpart of mmcv's ``ConvModule`` (order: involution,
    norm, activation). ``norm_cfg`` and ``act_cfg`` keep their
    :class:`Involution` meaning (the kernel generator's); the norm and
    activation applied to the output are ``out_norm_cfg`` and
    ``out_act_cfg``. The state dict keeps Involution's layout (``conv1.*``,
    ``conv2.*``), plus ``norm.*`` when ``out_norm_cfg`` is set.

    Args:
        *args, **kwargs: the :class:`Involution` arguments (conv signature).
        out_norm_cfg (dict, optional): norm on the output. Default None.
        out_act_cfg (dict, optional): activation on the output (after the
            norm). Default None.

    Shapes:
        (N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s)).

    Example:
        >>> import torch
        >>> layer = InvolutionModule(32, out_act_cfg=dict(type='ReLU'))
        >>> layer(torch.rand(2, 32, 25, 19)).shape
        torch.Size([2, 32, 25, 19])
    """

    def __init__(self,
                 *args,
                 out_norm_cfg: Optional[dict] = None,
                 out_act_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = (
            build_norm_layer(out_norm_cfg, self.channels)[1]
            if out_norm_cfg is not None else nn.Identity())
        self.activate = (
            build_activation_layer(out_act_cfg)
            if out_act_cfg is not None else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s))."""
        return self.activate(self.norm(super().forward(x)))
