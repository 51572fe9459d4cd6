"""Dynamic convolutions as conv layer types: CondConv, DynamicConv, DCD.

Each takes ``nn.Conv2d``'s arguments, so ``conv_cfg=dict(type=...)`` (or
``dcn=``) puts it into any OpenMMLab network built with
``build_conv_layer``. The names avoid mmdet's own ``DynamicConv`` (the
Sparse R-CNN interaction layer).

* :class:`CondConv2d` (Yang et al. 2019): ``W(x) = sum_e alpha_e(x) W_e``,
  ``alpha = sigmoid(Linear(GAP x))``.
* :class:`DynamicConv2d` (Chen et al. 2020): the same mixture with
  ``alpha = softmax(MLP(GAP x) / temperature)``.
* :class:`DCDConv2d` (Li et al. 2021): ``W(x) = Lambda(x) W0 + P Phi(x)
  Q^T``.

The mixtures run as ONE grouped convolution per batch (the batch folded into
the channels, ``groups = batch * groups``), so every sample gets its own
kernel.
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..registry import MODELS

__all__ = ['CondConv2d', 'DynamicConv2d', 'DCDConv2d', 'hard_sigmoid2']

IntPair = Union[int, Tuple[int, int]]


def hard_sigmoid2(x: Tensor) -> Tensor:
    """``relu6(x + 3) / 3``: a hard sigmoid with range [0, 2], 1 at 0."""
    return F.relu6(x + 3) / 3


class _ConvAttributes(BaseModule):
    """The attributes of ``nn.Conv2d`` that mmcv's ConvModule reads."""

    def __init__(self, in_channels, out_channels, kernel_size, stride,
                 padding, dilation, groups, init_cfg):
        super().__init__(init_cfg=init_cfg)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'groups={groups} must divide in_channels='
                             f'{in_channels} and out_channels='
                             f'{out_channels}.')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding = _pair(stride), _pair(padding)
        self.dilation, self.groups = _pair(dilation), groups
        self.transposed, self.output_padding = False, (0, 0)


class _MixtureConv2d(_ConvAttributes):
    """A convolution whose kernel mixes ``num_experts`` static kernels.

    Subclasses define :meth:`routing`: (N, C_in) pooled input -> (N, E)
    mixing weights.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: IntPair, stride: IntPair, padding: IntPair,
                 dilation: IntPair, groups: int, bias: bool,
                 num_experts: int, init_cfg: Optional[dict]) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, init_cfg)
        if num_experts < 1:
            raise ValueError(f'num_experts must be >= 1, got {num_experts}.')
        self.num_experts = num_experts
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_channels, in_channels // groups,
                        *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(
            num_experts, out_channels)) if bias else None
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        for expert in self.weight:  # each expert as nn.Conv2d initialises
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -fan_in**-0.5, fan_in**-0.5)

    def routing(self, pooled: Tensor) -> Tensor:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads a plain conv's weights: every expert starts from them.

        A static network's checkpoint (``weight`` (C_out, C_in/g, k, k),
        ``bias`` (C_out,)) is copied into each of the E experts, so an
        ImageNet ResNet initialises a mixture network; with softmax routing
        (DynamicConv) it then computes exactly what the static one did.
        """
        for name, plain_dims in (('weight', 4), ('bias', 1)):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == plain_dims:
                state_dict[prefix + name] = value.unsqueeze(0).expand(
                    self.num_experts, *value.shape).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out), as ``nn.Conv2d``."""
        batch = x.shape[0]
        alpha = self.routing(x.mean((2, 3)))  # (N, E)
        weight = (alpha @ self.weight.flatten(1)).view(
            batch * self.out_channels, *self.weight.shape[2:])
        bias = None if self.bias is None else (alpha @ self.bias).flatten()
        out = F.conv2d(
            x.reshape(1, batch * self.in_channels, *x.shape[2:]), weight,
            bias, self.stride, self.padding, self.dilation,
            batch * self.groups)
        return out.view(batch, self.out_channels, *out.shape[2:])


@MODELS.register_module()
class CondConv2d(_MixtureConv2d):
    """CondConv: ``W(x) = sum_e sigmoid(Linear(GAP x))_e W_e``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias: as ``nn.Conv2d``.
        num_experts (int): E, the number of expert kernels. Default 8.
        init_cfg (dict, optional): mmengine initialisation config.

    Shapes:
        as ``nn.Conv2d``: (N, C_in, H, W) -> (N, C_out, H_out, W_out).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair,
                 stride: IntPair = 1,
                 padding: IntPair = 0,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 num_experts: int = 8,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, num_experts,
                         init_cfg)
        self.router = nn.Linear(in_channels, num_experts)

    def routing(self, pooled: Tensor) -> Tensor:
        return torch.sigmoid(self.router(pooled))


@MODELS.register_module()
class DynamicConv2d(_MixtureConv2d):
    """DynamicConv: ``W(x) = sum_e softmax(MLP(GAP x) / tau)_e W_e``.

    The temperature ``tau`` starts high (near-uniform attention, all
    experts train) and is annealed to 1 by
    :class:`~mmplug_involution.engine.DynamicConvTemperatureHook`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias: as ``nn.Conv2d``.
        num_experts (int): E. Default 4.
        reduction (int): hidden width of the attention MLP is
            ``max(in_channels // reduction, 4)``. Default 4.
        temperature (float): initial tau. Default 30.
        init_cfg (dict, optional): mmengine initialisation config.

    Shapes:
        as ``nn.Conv2d``: (N, C_in, H, W) -> (N, C_out, H_out, W_out).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair,
                 stride: IntPair = 1,
                 padding: IntPair = 0,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 num_experts: int = 4,
                 reduction: int = 4,
                 temperature: float = 30.,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, num_experts,
                         init_cfg)
        hidden = max(in_channels // reduction, 4)
        self.router = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_experts))
        self.temperature = float(temperature)

    def routing(self, pooled: Tensor) -> Tensor:
        return (self.router(pooled) / self.temperature).softmax(1)


@MODELS.register_module()
class DCDConv2d(_ConvAttributes):
    """Dynamic convolution decomposition: ``W(x) = Lambda(x) W0 + P Phi(x)
    Q^T``.

    ``out = Lambda(x) * conv_kxk(x; W0) + P(BN1d(Phi(x) z) + z) + b`` with
    ``z = BN2d(Q x)``: Q a strided 1x1 conv C_in -> L, Phi(x) an L x L
    dynamic channel fusion, P a 1x1 conv L -> C_out, Lambda(x) a per-channel
    scale on the static kernel (hard sigmoid, range [0, 2]); Phi and Lambda
    come from the pooled input through a squeeze layer with an SE gate. As
    in the paper, the BatchNorms make a training batch's samples depend on
    each other; in eval mode every sample is independent.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            bias: as ``nn.Conv2d``; padding must keep the 1x1 path aligned,
            i.e. equal ``dilation * (kernel_size - 1) // 2``.
        groups (int): 1 only (the dense form of the paper).
        latent_dim (int, optional): L; default ``floor(sqrt(C_in))``, the
            paper's choice (L^2 <= C_in).
        squeeze_ratio (int): squeeze width ``max(C_in, L^2) //
            squeeze_ratio`` (at least 4). Default 16.
        init_cfg (dict, optional): mmengine initialisation config.

    Shapes:
        as ``nn.Conv2d``: (N, C_in, H, W) -> (N, C_out, H_out, W_out).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair,
                 stride: IntPair = 1,
                 padding: IntPair = 0,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 latent_dim: Optional[int] = None,
                 squeeze_ratio: int = 16,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, init_cfg)
        if groups != 1:
            raise ValueError('DCDConv2d is the dense (groups=1) form; got '
                             f'groups={groups}.')
        same = tuple(d * (k - 1) // 2
                     for d, k in zip(self.dilation, self.kernel_size))
        if self.padding != same:
            raise ValueError(f'padding must be dilation*(kernel_size-1)//2 '
                             f'= {same} so that the 1x1 dynamic path and the '
                             f'{self.kernel_size} static path align; got '
                             f'{self.padding}.')
        latent = latent_dim or math.isqrt(in_channels)
        squeeze = max(max(in_channels, latent**2) // squeeze_ratio, 4)
        self.latent_dim = latent
        self.static = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            bias=False)  # W0
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.squeeze = nn.Linear(in_channels, squeeze, bias=False)
        self.squeeze_gate = nn.Linear(squeeze, squeeze)
        self.phi = nn.Linear(squeeze, latent * latent)
        self.scale = nn.Linear(squeeze, out_channels)
        self.q = nn.Conv2d(in_channels, latent, 1, stride, bias=False)
        self.q_norm = nn.BatchNorm2d(latent)
        self.fusion_norm = nn.BatchNorm1d(latent)
        self.p = nn.Conv2d(latent, out_channels, 1, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads a plain conv's weights into the static kernel W0."""
        plain = prefix + 'weight'
        if plain in state_dict and prefix + 'static.weight' not in state_dict:
            state_dict[prefix + 'static.weight'] = state_dict.pop(plain)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out), as ``nn.Conv2d``."""
        batch = x.shape[0]
        y = self.squeeze(x.mean((2, 3)))
        y = y * hard_sigmoid2(self.squeeze_gate(y))  # SE gate
        phi = self.phi(y).view(batch, self.latent_dim, self.latent_dim)
        scale = hard_sigmoid2(self.scale(y))  # Lambda, (N, C_out)
        z = self.q_norm(self.q(x))  # (N, L, H_out, W_out)
        fused = self.fusion_norm(torch.bmm(phi, z.flatten(2)))
        out = torch.addcmul(
            self.p(fused.view_as(z) + z), scale[:, :, None, None],
            self.static(x))
        return out if self.bias is None else out + self.bias[:, None, None]
