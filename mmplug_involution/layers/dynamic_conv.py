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

The mixtures (and DCD's depthwise form) run as ONE grouped convolution per
batch (:func:`~mmplug_involution.ops.per_sample_conv2d`: the batch folded
into the channels, ``groups = batch * groups``), so every sample gets its own
kernel.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..ops import per_sample_conv2d
from ..ops.per_sample_conv import IntPair
from ..registry import MODELS
from .conv_attributes import ConvAttributesMixin

__all__ = [
    'CondConv2d', 'DynamicConv2d', 'DCDConv2d', 'hard_sigmoid2',
    'dcd_dynamic_branch', 'pooled_cells'
]


def hard_sigmoid2(x: Tensor) -> Tensor:
    """``relu6(x + 3) / 3``: a hard sigmoid with range [0, 2], 1 at 0."""
    return F.relu6(x + 3) / 3


def pooled_cells(x: Tensor, size: int) -> Tensor:
    """(N, C, H, W) -> (N, C * size^2): the means of the ``size`` x
    ``size`` cells of adaptive average pooling, channel-major.

    ``F.adaptive_avg_pool2d(x, size).flatten(1)``, except while exporting
    to ONNX, which has no adaptive pooling for sizes known only at run time
    (the TorchScript exporter refuses it, the dynamo one exported a wrong
    graph): there the same cells (rows ``floor(i H / size)`` to ``ceil((i +
    1) H / size)``, columns alike) are sliced and averaged.
    """
    if size == 1 or not (torch.onnx.is_in_onnx_export()
                         or torch.compiler.is_exporting()):
        return F.adaptive_avg_pool2d(x, size).flatten(1)
    height, width = x.shape[2:]
    # ceil as (a + size - 1) // size: non-negative operands, where ONNX's
    # truncating integer division agrees with Python's floor division
    rows = [
        x[:, :, i * height // size:((i + 1) * height + size - 1) // size]
        for i in range(size)
    ]
    cells = [
        row[..., j * width // size:((j + 1) * width + size - 1) // size].mean(
            (2, 3)) for row in rows for j in range(size)
    ]
    return torch.stack(cells, 2).flatten(1)


def dcd_dynamic_branch(layer: nn.Module, pooled: Tensor):
    """DCD's dynamic branch: (N, F) pooled input -> (Phi, Lambda).

    ``layer`` holds the generators (:class:`DCDConv2d`, or the DCD
    classifier head): ``squeeze`` F -> S with an SE gate (``squeeze_gate``),
    then ``phi`` S -> B * L^2 and ``scale`` S -> C_out.

    Returns:
        tuple: Phi(x), (N, B * L^2) unshaped, and Lambda(x) = hsig(scale),
        (N, C_out) in [0, 2].
    """
    y = layer.squeeze(pooled)
    y = y * hard_sigmoid2(layer.squeeze_gate(y))  # SE gate
    return layer.phi(y), hard_sigmoid2(layer.scale(y))


class _DynamicConvBase(ConvAttributesMixin, BaseModule):
    """A conv layer type with ``nn.Conv2d``'s attributes, as pairs."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: IntPair, stride: IntPair, padding: IntPair,
                 dilation: IntPair, groups: int,
                 init_cfg: Optional[dict]) -> None:
        super().__init__(init_cfg=init_cfg)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'groups={groups} must divide in_channels='
                             f'{in_channels} and out_channels='
                             f'{out_channels}.')
        self.set_conv_attributes(in_channels, out_channels, _pair(kernel_size),
                                 _pair(stride), _pair(padding),
                                 _pair(dilation), groups)


class _MixtureConv2d(_DynamicConvBase):
    """A convolution whose kernel mixes ``num_experts`` static kernels.

    Subclasses define :meth:`routing`: (N, C_in) pooled input -> (N, E)
    mixing weights.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: IntPair, stride: IntPair, padding: IntPair,
                 dilation: IntPair, groups: int, bias: bool, num_experts: int,
                 init_cfg: Optional[dict]) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, init_cfg)
        if num_experts < 1:
            raise ValueError(f'num_experts must be >= 1, got {num_experts}.')
        self.num_experts = num_experts
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_channels, in_channels // groups,
                        *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(num_experts,
                                             out_channels)) if bias else None
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        for expert in self.weight:  # each expert as nn.Conv2d initialises
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -fan_in**-0.5, fan_in**-0.5)

    def routing(self, pooled: Tensor) -> Tensor:
        raise NotImplementedError

    def routing_sum_at_zero(self) -> float:
        """The sum of the E mixing weights when the router's logits are 0."""
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads a plain conv's weights: every expert starts from them.

        A static network's checkpoint (``weight`` (C_out, C_in/g, k, k),
        ``bias`` (C_out,)) goes into each of the E experts, divided by
        :meth:`routing_sum_at_zero`, so an ImageNet ResNet initialises a
        mixture network: with softmax routing (DynamicConv, weights summing
        to 1) it then computes exactly what the static one did; with
        sigmoid routing (CondConv) it does so while the logits are near 0.
        """
        share = 1 / self.routing_sum_at_zero()
        for name, plain_dims in (('weight', 4), ('bias', 1)):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == plain_dims:
                state_dict[prefix + name] = value.unsqueeze(0).expand(
                    self.num_experts, *value.shape) * share
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out), as ``nn.Conv2d``."""
        alpha = self.routing(x.mean((2, 3)))  # (N, E)
        weight = (alpha @ self.weight.flatten(1)).view(x.shape[0],
                                                       *self.weight.shape[1:])
        bias = None if self.bias is None else alpha @ self.bias
        return per_sample_conv2d(x, weight, bias, self.stride, self.padding,
                                 self.dilation, self.groups)


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

    def routing_sum_at_zero(self) -> float:
        return self.num_experts / 2  # E sigmoids of 0


@MODELS.register_module()
class DynamicConv2d(_MixtureConv2d):
    """DynamicConv: ``W(x) = sum_e softmax(MLP(GAP x) / tau)_e W_e``.

    The temperature ``tau`` starts high (near-uniform attention, all
    experts train) and is annealed to 1 by
    :class:`~mmplug_involution.engine.DynamicConvTemperatureHook`. It is a
    buffer (``temperature`` in the state dict), so a checkpoint carries the
    value the model was trained to.

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
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got '
                             f'{temperature}.')
        # a buffer: the annealed value is saved, loaded and resumed with
        # the weights, so a trained model evaluates at its last temperature
        self.register_buffer('temperature', torch.tensor(float(temperature)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A plain conv's checkpoint keeps the initial temperature."""
        plain = state_dict.get(prefix + 'weight')
        if plain is not None and plain.dim() == 4:
            state_dict.setdefault(prefix + 'temperature', self.temperature)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_temperature(self, temperature: float) -> None:
        """Set tau in place (the buffer keeps its device and dtype)."""
        self.temperature.fill_(temperature)

    def routing(self, pooled: Tensor) -> Tensor:
        return (self.router(pooled) / self.temperature).softmax(1)

    def routing_sum_at_zero(self) -> float:
        return 1.  # a softmax, whatever the logits


@MODELS.register_module()
class DCDConv2d(_DynamicConvBase):
    """Dynamic convolution decomposition: ``W(x) = Lambda(x) W0 + P Phi(x)
    Q^T``.

    A squeeze layer with an SE gate turns the pooled input (global average
    pooling, or ``pool_size`` x ``pool_size`` cells flattened) into Lambda(x),
    a per-output-channel hard sigmoid in [0, 2] that scales the static
    kernel W0, and Phi(x), a dynamic L x L fusion matrix. ``groups`` picks
    the form:

    * dense (``groups=1``), the official computation: ``out = Lambda(x) *
      conv_kxk(x; W0) + P(BN1d(Phi(x) z) + z) + b``, ``z = BN2d(Q x)``, Q a
      strided 1x1 conv C_in -> L, P a 1x1 conv L -> C_out. With
      ``num_blocks=B`` the dynamic residual is block diagonal
      (``diag(P_b Phi_b(x) Q_b^T)``, the paper's sparse residual): Q and P
      become B-group 1x1 convs and Phi(x) B independent L x L fusions,
      while W0 stays dense. The BatchNorms make a training batch's samples
      depend on each other, as in the paper; in eval mode every sample is
      independent.
    * depthwise (``groups=in_channels``): the kernel, C_out x k^2 per
      sample, is ``Lambda(x) W0 + P Phi(x) R^T`` with R (k^2 x L) compressing
      the kernel elements, Phi(x) fusing the L latent elements and P
      (C_out x L) expanding back; it runs as ONE grouped convolution per
      batch (the batch folded into the channels). No BatchNorm: samples
      are independent in training too.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            bias: as ``nn.Conv2d``; in the dense form padding must keep the
            1x1 path aligned, i.e. equal ``dilation * (kernel_size - 1) //
            2``.
        groups (int): 1 (dense) or ``in_channels`` (depthwise).
        latent_dim (int, optional): L. Dense: per block, default
            ``floor(sqrt(C_in * pool_size^2 / B))`` (the paper's L^2 <= C,
            per block); depthwise: latent kernel elements, default
            ``floor(k^2 / 2)``.
        num_blocks (int): B, blocks of the dense form's sparse residual;
            must divide C_in and C_out. Default 1 (the full residual).
        pool_size (int): the squeeze reads the input average-pooled to
            ``pool_size`` x ``pool_size`` and flattened, ``C_in *
            pool_size^2`` features (the authors' ResNet-18 and MobileNetV2
            expansions use 2). Default 1 (global average pooling).
        squeeze_ratio (int): squeeze width ``max(C_in * pool_size^2, L^2)
            // squeeze_ratio`` (at least 4). Default 16.
        zero_init_dynamic (bool): start with P = 0 and Lambda = 1, so that
            the layer computes exactly its static convolution (for a
            network initialised from a static checkpoint). Default False.
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
                 num_blocks: int = 1,
                 pool_size: int = 1,
                 squeeze_ratio: int = 16,
                 zero_init_dynamic: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, init_cfg)
        self.depthwise = groups == in_channels and groups > 1
        if groups != 1 and not self.depthwise:
            raise ValueError(
                f'DCDConv2d has a dense form (groups=1) and a depthwise form '
                f'(groups=in_channels={in_channels}); got groups={groups}.')
        if num_blocks < 1 or in_channels % num_blocks or (out_channels %
                                                          num_blocks):
            raise ValueError(f'num_blocks={num_blocks} must be >= 1 and '
                             f'divide in_channels={in_channels} and '
                             f'out_channels={out_channels}.')
        if self.depthwise and num_blocks != 1:
            raise ValueError('num_blocks (the sparse residual) belongs to the '
                             'dense form; the depthwise form fuses kernel '
                             'elements, not channels.')
        if latent_dim is not None and latent_dim < 1:
            raise ValueError(f'latent_dim must be >= 1 (or None for the '
                             f'default), got {latent_dim}.')
        for name, value in (('pool_size', pool_size), ('squeeze_ratio',
                                                       squeeze_ratio)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got '
                                 f'{value!r}.')
        features = in_channels * pool_size**2  # what the squeeze reads
        if self.depthwise:
            latent = latent_dim or max(math.prod(self.kernel_size) // 2, 1)
        else:
            same = tuple(d * (k - 1) // 2
                         for d, k in zip(self.dilation, self.kernel_size))
            if self.padding != same:
                raise ValueError(
                    f'padding must be dilation*(kernel_size-1)//2 = {same} so '
                    f'that the 1x1 dynamic path and the {self.kernel_size} '
                    f'static path align; got {self.padding}.')
            latent = latent_dim or max(math.isqrt(features // num_blocks), 1)
        self.latent_dim, self.num_blocks = latent, num_blocks
        self.pool_size = pool_size
        self.zero_init_dynamic = zero_init_dynamic
        squeeze = max(max(features, latent**2) // squeeze_ratio, 4)
        self.static = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias=False)  # W0
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # the generators, bias-free as in the official code
        self.squeeze = nn.Linear(features, squeeze, bias=False)
        self.squeeze_gate = nn.Linear(squeeze, squeeze, bias=False)
        self.phi = nn.Linear(squeeze, num_blocks * latent**2, bias=False)
        self.scale = nn.Linear(squeeze, out_channels, bias=False)
        if self.depthwise:
            self.r = nn.Parameter(torch.empty(latent, *self.kernel_size))
            self.p = nn.Parameter(torch.empty(out_channels, latent))
            nn.init.kaiming_uniform_(self.r, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.p, a=math.sqrt(5))
        else:
            width = num_blocks * latent
            self.q = nn.Conv2d(
                in_channels, width, 1, stride, groups=num_blocks, bias=False)
            self.q_norm = nn.BatchNorm2d(width)
            self.fusion_norm = nn.BatchNorm1d(width)
            self.p = nn.Conv2d(  # its weight; see forward
                width,
                out_channels,
                1,
                groups=num_blocks,
                bias=False)
        self._zero_dynamic()

    def _zero_dynamic(self) -> None:
        if self.zero_init_dynamic:
            nn.init.zeros_(self.scale.weight)  # Lambda = hsig(0) = 1
            p = self.p if self.depthwise else self.p.weight
            nn.init.zeros_(p)

    def init_weights(self) -> None:
        """mmengine initialisation, keeping ``zero_init_dynamic``."""
        super().init_weights()
        self._zero_dynamic()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads a plain conv's weights into the static kernel W0."""
        plain = prefix + 'weight'
        if plain in state_dict and prefix + 'static.weight' not in state_dict:
            state_dict[prefix + 'static.weight'] = state_dict.pop(plain)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out), as ``nn.Conv2d``."""
        phi, scale = dcd_dynamic_branch(self, pooled_cells(
            x, self.pool_size))  # scale: Lambda
        if self.depthwise:
            return self._forward_depthwise(x, phi, scale)
        batch, blocks, latent = x.shape[0], self.num_blocks, self.latent_dim
        z = self.q_norm(self.q(x))  # (N, B * L, H_out, W_out)
        z_blocks = z.view(batch, blocks, latent, -1)
        fused = torch.matmul(
            phi.view(batch, blocks, latent, latent), z_blocks)  # Phi_b(x) z_b
        fused = self.fusion_norm(fused.view(batch, blocks * latent, -1))
        # P as a matmul of its weight: oneDNN's 1x1 conv from L (few)
        # channels runs ~10x slower than the matmul on CPU
        residual = torch.matmul(
            self.p.weight.view(blocks, -1, latent),
            fused.view_as(z_blocks) + z_blocks)  # (N, B, C_out / B, HW)
        # added into the static branch, which is in x's memory format
        out = (self.static(x) * scale[:, :, None, None]).add_(
            residual.view(batch, self.out_channels, *z.shape[2:]))
        return out if self.bias is None else out + self.bias[:, None, None]

    def _forward_depthwise(self, x: Tensor, phi: Tensor,
                           scale: Tensor) -> Tensor:
        """One grouped conv with the kernel ``Lambda W0 + P Phi R^T``."""
        batch, latent = x.shape[0], self.latent_dim
        kernel = torch.addcmul(
            self.p @ phi.view(batch, latent, latent) @ self.r.flatten(1),
            scale[:, :,
                  None], self.static.weight.flatten(1))  # (N, C_out, k^2)
        bias = None if self.bias is None else self.bias.expand(batch, -1)
        return per_sample_conv2d(
            x, kernel.view(batch, self.out_channels, 1, *self.kernel_size),
            bias, self.stride, self.padding, self.dilation, self.groups)
