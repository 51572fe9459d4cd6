"""X-volution (Chen et al. 2021): convolution plus attention in one block.

Training form: ``BN_c(conv(x)) + BN_a(attention(x))``. For the local
attentions (``pssa``, ``involution``) :meth:`XVolution.switch_to_deploy`
folds both BatchNorms and both branches into one dynamic convolution,
:func:`~mmplug_involution.ops.xvolution_fused2d`; global self-attention
(``sa``) stays two-branch.
"""
import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import involution2d, pixel_shift_attention, xvolution_fused2d
from ..registry import MODELS
from .conv_attributes import ConvAttributesMixin
from .involution import Involution

__all__ = [
    'ATTENTIONS', 'GlobalSelfAttention', 'PixelShiftAttention', 'XVolution',
    'switch_xvolution_to_deploy'
]

ATTENTIONS = ('pssa', 'involution', 'sa')


class PixelShiftAttention(BaseModule):
    """The PSSA kernel generator: query-key products over K x K shifts.

    ``q = W_q x`` (at the output positions), ``k = W_k x`` (1x1 convs, or
    the identity when ``qk_proj=False``); one learnable logit scale per
    group and offset. See :func:`~mmplug_involution.ops.pixel_shift_attention`.

    Shapes:
        (N, C, H, W) -> (N, G*K*K, ceil(H / s), ceil(W / s)).
    """

    def __init__(self,
                 channels: int,
                 kernel_size: int,
                 stride: int,
                 dilation: int,
                 groups: int,
                 qk_proj: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.kernel_size, self.stride, self.dilation = (kernel_size, stride,
                                                        dilation)
        self.query = nn.Conv2d(
            channels, channels, 1, bias=False) if qk_proj else nn.Identity()
        self.key = nn.Conv2d(
            channels, channels, 1, bias=False) if qk_proj else nn.Identity()
        self.logit_scale = nn.Parameter(torch.ones(groups, kernel_size**2))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, G*K*K, H_out, W_out), softmax-normalised."""
        query = self.query(x[:, :, ::self.stride, ::self.stride])
        return pixel_shift_attention(query, self.key(x), self.logit_scale,
                                     self.kernel_size, self.stride,
                                     self.dilation)


class GlobalSelfAttention(BaseModule):
    """Non-local multi-head self-attention over all input pixels.

    Queries at the output positions (every ``stride``-th pixel), keys and
    values everywhere; ``groups`` heads. Memory is quadratic in H*W (the
    comparison the paper makes); :func:`F.scaled_dot_product_attention`
    picks the most economical kernel available.

    Shapes:
        (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 groups: int,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.stride, self.groups = stride, groups
        self.query = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.value = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        query = self.query(x[:, :, ::self.stride, ::self.stride])
        out_size = query.shape[2:]

        def heads(t):  # (N, C, h, w) -> (N, G, h*w, C/G)
            return t.reshape(batch, self.groups, -1,
                             t.shape[2] * t.shape[3]).transpose(2, 3)

        out = F.scaled_dot_product_attention(
            heads(query), heads(self.key(x)), heads(self.value(x)))
        return out.transpose(2, 3).reshape(batch, -1, *out_size)


@MODELS.register_module()
class XVolution(ConvAttributesMixin, BaseModule):
    """X-volution: a K x K convolution branch plus an attention branch.

    ``y = BN_c(conv(x)) + BN_a(att(x))`` with ``att`` one of

    * ``'pssa'``: pixel-shift self-attention (this project's formulation of
      the paper's PSSA, ``docs/xvolution.md``): per group, a softmax over
      the K x K neighbourhood of query-key products, aggregating ``x``
      with the involution operator;
    * ``'involution'``: involution's kernel generator as the attention;
    * ``'sa'``: global multi-head self-attention (queries, keys, values).

    Also a conv layer type: ``dcn=dict(type='XVolution', attention='pssa')``
    with ``stage_with_dcn`` puts it into mmdet's ResNet and mmseg's
    ResNetV1c (their ``build_conv_layer(dcn, planes, planes, 3, stride,
    padding=dilation, dilation=dilation, bias=False)`` call), and
    ``ConvModule(..., conv_cfg=dict(type='XVolution'))`` builds it too.

    Args:
        in_channels (int): C_in.
        out_channels (int): C_out; must equal C_in for ``pssa`` and
            ``involution``, which aggregate the input's own channels.
        kernel_size (int): K, odd. Default 3.
        stride (int): Default 1.
        padding (int, optional): must be ``dilation * (K - 1) // 2`` (the
            default), the padding of the local window.
        dilation (int): Default 1.
        groups (int, optional): attention groups (heads for ``sa``); each
            shares one attention map. Default: C_out // 16, at least 1.
        bias (bool): bias of the convolution. Default False.
        attention (str): ``'pssa'`` (default), ``'involution'`` or ``'sa'``.
        qk_proj (bool): ``pssa`` with 1x1 query/key projections (default)
            or on the input itself.
        norm_cfg (dict): the branches' norms. Default ``dict(type='BN')``.
        zero_init_attention (bool): start the attention branch's norm scale
            at zero, so that a network initialised from a plain conv
            checkpoint starts out computing what that network computed.
            Default False.
        deploy (bool): build the fused deploy form directly (to load a
            checkpoint written by ``tools/deploy/xvolution_to_deploy.py``).
        init_cfg (dict, optional): mmengine initialisation config.

    Shapes:
        (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)).

    Example:
        >>> import torch
        >>> layer = XVolution(32, 32, 3, stride=2).eval()
        >>> x = torch.rand(2, 32, 15, 20)
        >>> y = layer(x)
        >>> y.shape
        torch.Size([2, 32, 8, 10])
        >>> _ = layer.switch_to_deploy()
        >>> torch.allclose(layer(x), y, atol=1e-5)
        True
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 3,
                 stride: int = 1,
                 padding: Optional[int] = None,
                 dilation: int = 1,
                 groups: Optional[int] = None,
                 bias: bool = False,
                 attention: str = 'pssa',
                 qk_proj: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 zero_init_attention: bool = False,
                 deploy: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if attention not in ATTENTIONS:
            raise ValueError(f'attention must be one of {ATTENTIONS}, got '
                             f'{attention!r}.')
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}.')
        window_padding = dilation * (kernel_size - 1) // 2
        if padding is not None and padding != window_padding:
            raise ValueError(f'padding must be dilation*(K-1)/2 = '
                             f'{window_padding} (the attention window), got '
                             f'{padding}.')
        if attention != 'sa' and in_channels != out_channels:
            raise ValueError(f'attention={attention!r} aggregates the input '
                             'channels, so in_channels must equal '
                             f'out_channels; got {in_channels} -> '
                             f'{out_channels} (use attention=\'sa\' or a '
                             'conv for this layer).')
        groups = groups or max(out_channels // 16, 1)
        if out_channels % groups:
            raise ValueError(f'groups={groups} must divide out_channels='
                             f'{out_channels}.')
        if deploy and attention == 'sa':
            raise ValueError("attention='sa' has no deploy form: global "
                             'attention does not fold into a local kernel.')
        self.set_conv_attributes(in_channels, out_channels, kernel_size,
                                 stride, window_padding, dilation, groups)
        self.attention_type, self.deploy = attention, deploy
        if attention == 'pssa':
            self.attention = PixelShiftAttention(out_channels, kernel_size,
                                                 stride, dilation, groups,
                                                 qk_proj)
        elif attention == 'involution':
            self.attention = Involution(
                out_channels,
                out_channels,
                kernel_size,
                stride,
                group_channels=out_channels // groups,
                reduction_ratio=4 if out_channels % 4 == 0 else 1,
                dilation=dilation,
                norm_cfg=norm_cfg)
        else:
            self.attention = GlobalSelfAttention(in_channels, out_channels,
                                                 stride, groups)
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            window_padding,
            dilation,
            bias=bias or deploy)
        if deploy:
            self.fused = conv
            self.attention_scale = nn.Parameter(torch.ones(out_channels))
        else:
            self.conv = conv
            self.conv_norm = build_norm_layer(norm_cfg, out_channels)[1]
            self.attention_norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.zero_init_attention = zero_init_attention
        self._zero_attention_scale()

    def _zero_attention_scale(self) -> None:
        if self.zero_init_attention and not self.deploy:
            nn.init.zeros_(self.attention_norm.weight)

    def init_weights(self) -> None:
        """mmengine initialisation, keeping ``zero_init_attention``."""
        super().init_weights()
        self._zero_attention_scale()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads the weights of the plain conv this layer replaces.

        A checkpoint of the static network (``prefix + 'weight'``, e.g. an
        ImageNet ResNet's ``layer3.0.conv2.weight``) initialises the
        convolution branch, so X-volution networks start from the usual
        pretrained weights; the attention branch keeps its initialisation.
        """
        plain = prefix + 'weight'
        if not self.deploy and plain in state_dict and \
                prefix + 'conv.weight' not in state_dict:
            state_dict[prefix + 'conv.weight'] = state_dict.pop(plain)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def generate_kernel(self, x: Tensor) -> Tensor:
        """The attention branch's (N, G*K*K, H_out, W_out) local kernel
        (pssa, involution; as ``Involution.generate_kernel``)."""
        if self.attention_type == 'involution':
            return self.attention.generate_kernel(x)
        return self.attention(x)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s))."""
        if self.deploy:
            return xvolution_fused2d(x, self.fused.weight, self.fused.bias,
                                     self.generate_kernel(x),
                                     self.attention_scale, self.stride,
                                     self.dilation)
        if self.attention_type == 'sa':
            attended = self.attention(x)
        else:
            attended = involution2d(x, self.generate_kernel(x),
                                    self.kernel_size, self.stride,
                                    self.padding, self.dilation)
        return self.conv_norm(self.conv(x)) + self.attention_norm(attended)

    def switch_to_deploy(self) -> bool:
        """Fold both norms and branches into one dynamic convolution.

        ``W' = W * gamma_c / sigma_c``; ``attention_scale = gamma_a /
        sigma_a``; ``b' = (b - mu_c) gamma_c / sigma_c + beta_c + beta_a -
        mu_a gamma_a / sigma_a``. Uses the norms' running statistics, so
        outputs equal the training form's in eval mode. Returns False (and
        says so) for ``sa``, which stays two-branch; True otherwise.
        """
        if self.deploy:
            return True
        if self.attention_type == 'sa':
            print_log(
                "XVolution(attention='sa') stays two-branch in deployment: "
                'global attention does not fold into a local kernel.',
                logger='current',
                level=logging.WARNING)
            return False
        conv_scale, conv_shift = _norm_affine(self.conv_norm)
        attention_scale, attention_shift = _norm_affine(self.attention_norm)
        fused = nn.Conv2d(self.in_channels, self.out_channels,
                          self.kernel_size, self.stride, self.padding,
                          self.dilation).to(self.conv.weight)
        with torch.no_grad():
            fused.weight.copy_(self.conv.weight *
                               conv_scale[:, None, None, None])
            bias = conv_shift + attention_shift
            if self.conv.bias is not None:
                bias = bias + self.conv.bias * conv_scale
            fused.bias.copy_(bias)
        self.fused = fused
        self.attention_scale = nn.Parameter(attention_scale.detach().clone())
        del self.conv, self.conv_norm, self.attention_norm
        self.deploy = True
        return True


def _norm_affine(norm: nn.Module):
    """(scale, shift) with ``norm(x) = scale * x + shift`` in eval mode."""
    if not isinstance(norm, _BatchNorm) or norm.running_var is None:
        raise TypeError('switch_to_deploy folds BatchNorm with running '
                        f'statistics; got {type(norm).__name__}.')
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale.detach(), shift.detach()


def switch_xvolution_to_deploy(model: nn.Module) -> int:
    """Switch every :class:`XVolution` in ``model`` to its deploy form.

    Returns:
        int: how many were fused (``sa`` layers stay two-branch).
    """
    return sum(module.switch_to_deploy() for module in list(model.modules())
               if isinstance(module, XVolution) and not module.deploy)
