"""RedNet (Li et al., CVPR 2021): ResNet with involution bottlenecks."""
import logging
from typing import Optional, Sequence, Tuple

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule, Sequential
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ...layers import Involution
from ...registry import MODELS


class RedNetBottleneck(BaseModule):
    """Bottleneck whose 3x3 conv is an involution (expansion 4, pytorch style).

    conv1 (1x1) -> norm1 -> ReLU -> conv2 (involution K x K, stride,
    dilation) -> norm2 -> ReLU -> conv3 (1x1) -> norm3 -> + identity -> ReLU.
    Attribute names (``conv1``, ``bn1``, ..., ``downsample``) match the
    reference implementation's state dict.
    """
    expansion = 4

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 kernel_size: int = 7,
                 group_channels: int = 16,
                 reduction_ratio: int = 4,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(
            norm_cfg, planes * self.expansion, postfix=3)
        self.conv1 = build_conv_layer(
            conv_cfg, inplanes, planes, 1, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = Involution(
            planes,
            kernel_size=kernel_size,
            stride=stride,
            group_channels=group_channels,
            reduction_ratio=reduction_ratio,
            dilation=dilation,
            norm_cfg=norm_cfg)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = build_conv_layer(
            conv_cfg, planes, planes * self.expansion, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    @property
    def norm3(self) -> nn.Module:
        return getattr(self, self.norm3_name)

    def forward(self, x: Tensor) -> Tensor:
        """(N, inplanes, H, W) -> (N, 4 * planes, ceil(H/s), ceil(W/s))."""

        def _inner_forward(x):
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.relu(self.norm2(self.conv2(out)))
            out = self.norm3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


@MODELS.register_module()
class RedNet(BaseModule):
    """RedNet backbone, with the arguments of mmdet's ``ResNet``.

    Args:
        depth (int): 26, 38, 50, 101 or 152.
        in_channels (int): Input image channels. Default 3.
        stem_channels (int): Stem output channels; the stem involution works
            on half of them. Default 64.
        base_channels (int): Middle channels of the first stage. Default 64.
        num_stages (int): 1 to 4. Default 4.
        strides (Sequence[int]): Stride of the first block of each stage.
        dilations (Sequence[int]): Dilation of every block of each stage;
            ``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)`` gives output
            stride 8 for segmentation.
        contract_dilation (bool): The first block of a dilated stage uses
            half its dilation, as mmseg's ``ResNetV1c`` (its default there,
            True; here False, as mmdet's ``ResNet``).
        out_indices (Sequence[int]): Stages whose outputs are returned.
        frozen_stages (int): Stages to freeze (stop grad, norm in eval mode);
            0 freezes the stem only, -1 nothing. Default -1.
        conv_cfg (dict, optional): Config of the 1x1 convs and the stem convs.
        norm_cfg (dict): Config of every norm layer, including those inside
            the involutions' kernel generators. Default BN.
        norm_eval (bool): Keep BN layers in eval mode (frozen statistics)
            while training. Default True, as mmdet's ResNet.
        with_cp (bool): Gradient checkpointing in the bottlenecks. Default
            False.
        zero_init_residual (bool): Start each bottleneck's last norm at zero.
            Default True.
        stem_kernel_size (int): Kernel size of the stem involution. 3 in the
            published ImageNet models, 7 in the reference detection and
            segmentation models. Default 7; loading an ImageNet checkpoint
            then keeps the stem's kernel generator head (``stem.1.conv2``)
            at its initialisation, with a warning.
        kernel_size (int): Kernel size of the bottleneck involutions.
            Default 7.
        group_channels (int): Channels per involution group. Default 16.
        reduction_ratio (int): Involution kernel-generator reduction.
            Default 4.
        init_cfg (dict or list[dict], optional): mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint=PATH, prefix='backbone.')``.

    Example:
        >>> import torch
        >>> model = RedNet(depth=26, out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 97, 131))]
        [(1, 256, 25, 33), (1, 512, 13, 17), (1, 1024, 7, 9), (1, 2048, 4, 5)]
    """

    arch_settings = {
        26: (1, 2, 4, 1),
        38: (2, 3, 5, 2),
        50: (3, 4, 6, 3),
        101: (3, 4, 23, 3),
        152: (3, 8, 36, 3),
    }

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 contract_dilation: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = True,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 stem_kernel_size: int = 7,
                 kernel_size: int = 7,
                 group_channels: int = 16,
                 reduction_ratio: int = 4,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'invalid depth {depth} for RedNet; choose from '
                             f'{sorted(self.arch_settings)}.')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'num_stages must be 1 to 4, got {num_stages}.')
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(f'strides {tuple(strides)} and dilations '
                             f'{tuple(dilations)} need one entry per stage '
                             f'(num_stages={num_stages}).')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be -1 to num_stages='
                             f'{num_stages}, got {frozen_stages}.')
        if not out_indices or max(out_indices) >= num_stages:
            raise ValueError(f'out_indices {tuple(out_indices)} must name '
                             f'stages 0..{num_stages - 1}.')
        self.depth = depth
        self.stem_channels = stem_channels
        self.stem_kernel_size = stem_kernel_size
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.contract_dilation = contract_dilation
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        block_init_cfg = None
        if init_cfg is None:
            self.init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(
                    type='Constant',
                    val=1,
                    layer=['_BatchNorm', 'GroupNorm'])
            ]
            if zero_init_residual:
                block_init_cfg = dict(
                    type='Constant', val=0, override=dict(name='norm3'))

        self.stem = self._make_stem(in_channels, stem_channels,
                                    stem_kernel_size, group_channels,
                                    reduction_ratio, conv_cfg, norm_cfg)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_layers = []
        inplanes = stem_channels
        stage_blocks = self.arch_settings[depth][:num_stages]
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            layer = self._make_stage(
                inplanes, planes, num_blocks, strides[i], dilations[i],
                contract_dilation,
                dict(
                    kernel_size=kernel_size,
                    group_channels=group_channels,
                    reduction_ratio=reduction_ratio,
                    with_cp=with_cp,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    init_cfg=block_init_cfg))
            inplanes = planes * RedNetBottleneck.expansion
            name = f'layer{i + 1}'
            self.add_module(name, layer)
            self.res_layers.append(name)
        self.feat_dim = inplanes
        self._freeze_stages()

    @staticmethod
    def _make_stem(in_channels, stem_channels, kernel_size, group_channels,
                   reduction_ratio, conv_cfg, norm_cfg) -> nn.Sequential:
        """Conv 3x3 s2 -> involution -> norm -> ReLU -> conv 3x3."""
        mid = stem_channels // 2
        return nn.Sequential(
            ConvModule(
                in_channels,
                mid,
                3,
                stride=2,
                padding=1,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg),
            Involution(
                mid,
                kernel_size=kernel_size,
                group_channels=group_channels,
                reduction_ratio=reduction_ratio,
                norm_cfg=norm_cfg),
            build_norm_layer(norm_cfg, mid)[1],
            nn.ReLU(inplace=True),
            ConvModule(
                mid,
                stem_channels,
                3,
                padding=1,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg))

    @staticmethod
    def _make_stage(inplanes, planes, num_blocks, stride, dilation,
                    contract_dilation, block_kwargs) -> Sequential:
        outplanes = planes * RedNetBottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != outplanes:
            downsample = nn.Sequential(
                build_conv_layer(
                    block_kwargs['conv_cfg'],
                    inplanes,
                    outplanes,
                    1,
                    stride=stride,
                    bias=False),
                build_norm_layer(block_kwargs['norm_cfg'], outplanes)[1])
        blocks = [
            RedNetBottleneck(
                inplanes,
                planes,
                stride=stride,
                dilation=dilation // 2
                if contract_dilation and dilation > 1 else dilation,
                downsample=downsample,
                **block_kwargs)
        ]
        blocks += [
            RedNetBottleneck(
                outplanes, planes, dilation=dilation, **block_kwargs)
            for _ in range(1, num_blocks)
        ]
        # mmengine's Sequential: its init_weights reaches the blocks' init_cfg
        return Sequential(*blocks)

    def _freeze_stages(self) -> None:
        modules = []
        if self.frozen_stages >= 0:
            modules.append(self.stem)
        modules += [
            getattr(self, f'layer{i}')
            for i in range(1, self.frozen_stages + 1)
        ]
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Keep the stem kernel-generator head when the stem K differs.

        The published ImageNet RedNets use a 3x3 stem involution
        (``stem.1.conv2`` has 2*3*3 = 18 outputs), the reference detection
        and segmentation models a 7x7 one (98 outputs). Such a checkpoint
        loads everything else; this head keeps its initialisation, with one
        warning that says so.
        """
        head = self.stem[1].conv2.conv
        mismatched = []
        for name, param in (('weight', head.weight), ('bias', head.bias)):
            key = f'{prefix}stem.1.conv2.conv.{name}'
            if key in state_dict and state_dict[key].shape != param.shape:
                mismatched.append((key, tuple(state_dict[key].shape)))
                state_dict[key] = param.detach().clone()
        if mismatched:
            ckpt_outputs = mismatched[0][1][0]
            groups = self.stem[1].groups
            print_log(
                f'RedNet: the checkpoint\'s stem involution head '
                f'{prefix}stem.1.conv2 generates {ckpt_outputs} = '
                f'{groups}x{ckpt_outputs // groups} kernel values per pixel, '
                f'this model\'s stem_kernel_size={self.stem_kernel_size} '
                f'needs {head.weight.shape[0]}; that head keeps its '
                'initialisation and every other weight is loaded. ImageNet '
                'RedNet checkpoints use stem_kernel_size=3.',
                logger='current',
                level=logging.WARNING)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(N, in_channels, H, W) -> one map per ``out_indices`` entry.

        Stage i has 256 * 2**i channels (with base_channels 64) and spatial
        size ceil(H / stride_i), stride_i = 4 * product of strides[:i+1].
        """
        x = self.maxpool(self.stem(x))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'RedNet':
        """Set train mode, keeping frozen stages and (norm_eval) BN frozen."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
