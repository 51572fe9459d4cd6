"""RedNet (Li et al., CVPR 2021): ResNet with involution bottlenecks."""
import logging
import re
from typing import Optional, Sequence

import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import Sequential
from mmseg.models.backbones import ResNet
from mmseg.models.backbones.resnet import Bottleneck

from ...layers import Involution
from ...registry import MODELS

#: model zoos whose aliases mmengine resolves; none of them holds a RedNet
_ZOO_SCHEMES = ('torchvision://', 'modelzoo://', 'open-mmlab://',
                'openmmlab://', 'mmcls://')
#: names of the ResNet family, whose 1x1 convs would half-load into RedNet
_RESNET_NAMES = re.compile(r'res(net|next|nest|2net)|regnet', re.IGNORECASE)
#: a key every RedNet state dict has and no ResNet's does
_INVOLUTION_KEY = 'layer1.0.conv2.conv1.conv.weight'
_CHECKPOINT_ADVICE = (
    "point init_cfg at a RedNet ImageNet checkpoint (init_cfg=dict("
    "type='Pretrained', checkpoint=PATH, prefix='backbone.'), see "
    "docs/rednet.md) or set init_cfg=None to train from scratch; in mmseg "
    "configs the ResNet checkpoint usually sits at the segmentor: set "
    "model.pretrained=None")


def _pretrained_checkpoints(init_cfg, pretrained) -> list:
    """The checkpoints named by ``pretrained`` and Pretrained init_cfgs."""
    names = [pretrained] if isinstance(pretrained, str) else []
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    names += [
        cfg['checkpoint'] for cfg in cfgs
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'
        and isinstance(cfg.get('checkpoint'), str)
    ]
    return names


def check_not_resnet_checkpoint(checkpoint: str) -> None:
    """Refuse, by its name and before any download, a ResNet checkpoint.

    Model-zoo aliases (``torchvision://``, ``open-mmlab://``, ...) hold no
    RedNet; a URL whose file is named after the ResNet family (resnet,
    resnext, resnest, res2net, regnet) without "rednet" in its name is one
    too. Local files and other URLs are checked by their keys when they
    load.
    """
    name = checkpoint.lower()
    if 'rednet' in name:
        return
    remote_resnet = '://' in name and _RESNET_NAMES.search(
        name.rsplit('/', 1)[-1])
    if name.startswith(_ZOO_SCHEMES) or remote_resnet:
        raise ValueError(
            f'RedNet cannot start from {checkpoint!r}: that is not a RedNet '
            "checkpoint (a stock config's ResNet weights; their 1x1 convs "
            "would load and the rest not). To fix it, "
            f'{_CHECKPOINT_ADVICE}.')


@MODELS.register_module()
class RedNet(ResNet):
    """RedNet backbone: the toolkit's ResNet with involution bottlenecks.

    mmseg's ``ResNet`` (which takes every argument of mmdet's and adds
    ``multi_grid`` and ``contract_dilation``) with RedNet's stem (3x3 conv
    s2, involution, norm, ReLU, 3x3 conv, max-pool) and, in every
    bottleneck, a K x K involution as ``conv2``. Stages, strides,
    dilations, ``style``, ``avg_down``, ``plugins``, ``with_cp``, freezing,
    ``norm_eval`` and initialisation are the toolkit's. The state dict is
    the reference implementation's key for key (``stem.0.conv.weight``,
    ``stem.1.conv1.conv.weight``, ``layer1.0.conv2.conv1.conv.weight``,
    ``layer1.0.bn1.*``, ``layer1.0.downsample.0.weight``, ...).

    Args:
        depth (int): 26, 38, 50, 101 or 152.
        in_channels, base_channels, num_stages, strides, dilations,
            out_indices, style, avg_down, frozen_stages, norm_cfg,
            plugins, multi_grid, contract_dilation, with_cp,
            zero_init_residual, pretrained, init_cfg: as mmseg's and
            mmdet's ``ResNet``; ``expansion`` and ``drop_path_rate``, which
            mmpretrain's ``ResNet`` adds, only as None/4 and 0 (RedNet's
            bottlenecks expand by 4 and have no stochastic depth).
            ``frozen_stages=0`` freezes the stem;
            ``dilations`` reach the involutions (``strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4)`` gives output stride 8);
            ``multi_grid`` gives the dilations of the last stage's blocks,
            one per block, as mmseg does. ``pretrained`` and a Pretrained
            ``init_cfg`` must name a RedNet checkpoint: a ResNet one (a
            stock base's ``torchvision://resnet50``,
            ``open-mmlab://resnet50_v1c``) is refused by name before any
            download and, by its keys, when it loads.
        stem_channels (int, optional): stem output channels (None: as
            ``base_channels``, as mmdet's ResNet); the stem involution works
            on half of them. Default 64.
        conv_cfg (dict, optional): config of the 1x1 convs (bottleneck and
            downsample) and the stem convs.
        norm_eval (bool): keep BN in eval mode while training. Default
            True, as mmdet's ResNet (mmseg configs set False).
        deep_stem (bool): False, the toolkits' default: RedNet has its own
            stem. True (ResNetV1c's three-conv stem) is refused.
        dcn (dict, optional): None: every ``conv2`` already is an
            involution. A config is refused; ``stage_with_dcn`` is then
            unused, as in ResNet.
        stem_kernel_size (int): K of the stem involution: 3 in the published
            ImageNet models, 7 (the default) in the reference detection and
            segmentation models; loading an ImageNet checkpoint then keeps
            the stem's kernel-generator head (``stem.1.conv2``) at its
            initialisation, with a warning.
        kernel_size (int): K of the bottleneck involutions. Default 7.
        group_channels (int): channels per involution group. Default 16.
        reduction_ratio (int): involution kernel-generator reduction.
            Default 4.

    Shapes:
        (N, in_channels, H, W) -> one map per ``out_indices`` entry; stage i
        has ``4 * base_channels * 2**i`` channels and size
        ``ceil(H / (4 * prod(strides[:i+1])))``.

    Example:
        >>> import torch
        >>> model = RedNet(depth=26, out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 97, 131))]
        [(1, 256, 25, 33), (1, 512, 13, 17), (1, 1024, 7, 9), (1, 2048, 4, 5)]
    """

    arch_settings = {
        26: (Bottleneck, (1, 2, 4, 1)),
        38: (Bottleneck, (2, 3, 5, 2)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: Optional[int] = 64,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch',
                 deep_stem: bool = False,
                 avg_down: bool = False,
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = True,
                 dcn: Optional[dict] = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False,
                                                   False),
                 plugins: Optional[list] = None,
                 multi_grid: Optional[Sequence[int]] = None,
                 contract_dilation: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg=None,
                 expansion: Optional[int] = None,
                 drop_path_rate: float = 0.,
                 stem_kernel_size: int = 7,
                 kernel_size: int = 7,
                 group_channels: int = 16,
                 reduction_ratio: int = 4) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'invalid depth {depth} for RedNet; choose from '
                             f'{sorted(self.arch_settings)}.')
        if deep_stem:
            raise ValueError(
                'RedNet has its own stem (3x3 conv, involution, 3x3 conv); '
                "deep_stem=True asks for ResNetV1c's three-conv stem, which "
                'RedNet does not have: remove deep_stem (stem_channels and '
                'stem_kernel_size configure the stem).')
        if dcn is not None:
            raise ValueError(
                f'RedNet takes no dcn (got {dcn!r}): every bottleneck conv2 '
                'already is an involution (set kernel_size, group_channels, '
                'reduction_ratio). To put involution or another conv type '
                "into some stages of a ResNet, keep type='ResNet' and set "
                "dcn=dict(type='Involution', window_size=7) with "
                'stage_with_dcn.')
        if expansion not in (None, Bottleneck.expansion):
            raise ValueError(
                f'RedNet bottlenecks expand by {Bottleneck.expansion}, got '
                f'expansion={expansion}: remove expansion (mmpretrain\'s '
                'ResNet argument).')
        if drop_path_rate:
            raise ValueError(
                f'RedNet has no stochastic depth (got drop_path_rate='
                f'{drop_path_rate}, an argument of mmpretrain\'s ResNet): '
                'set drop_path_rate=0.')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(
                f"style must be 'pytorch' or 'caffe', got {style!r}.")
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
        last_blocks = self.arch_settings[depth][1][num_stages - 1]
        if multi_grid is not None and len(multi_grid) != last_blocks:
            raise ValueError(
                f'multi_grid {tuple(multi_grid)} needs one dilation per block '
                f'of the last stage: RedNet-{depth} has {last_blocks} there.')
        for name in _pretrained_checkpoints(init_cfg, pretrained):
            check_not_resnet_checkpoint(name)
        if stem_channels is None:
            stem_channels = base_channels
        # read by _make_stem_layer and make_res_layer, which ResNet calls
        self.stem_kernel_size = stem_kernel_size
        self.involution_cfg = dict(
            type='Involution',
            window_size=kernel_size,
            group_channels=group_channels,
            reduction_ratio=reduction_ratio,
            norm_cfg=norm_cfg)
        # deep_stem=True: ResNet runs and freezes `self.stem`, RedNet's stem
        super().__init__(
            depth,
            in_channels=in_channels,
            stem_channels=stem_channels,
            base_channels=base_channels,
            num_stages=num_stages,
            strides=strides,
            dilations=dilations,
            out_indices=out_indices,
            style=style,
            deep_stem=True,
            avg_down=avg_down,
            frozen_stages=frozen_stages,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            stage_with_dcn=stage_with_dcn,
            plugins=plugins,
            multi_grid=multi_grid,
            contract_dilation=contract_dilation,
            with_cp=with_cp,
            zero_init_residual=zero_init_residual,
            pretrained=pretrained,
            init_cfg=init_cfg)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        """Conv 3x3 s2 -> involution -> norm -> ReLU -> conv 3x3; max-pool."""
        mid = stem_channels // 2
        involution = dict(self.involution_cfg, window_size=None)
        del involution['type']
        # mmengine's Sequential, so that init_weights reaches the
        # involution's own initialisation (a torch one hides it)
        self.stem = Sequential(
            ConvModule(
                in_channels,
                mid,
                3,
                stride=2,
                padding=1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg),
            Involution(mid, mid, self.stem_kernel_size, **involution),
            build_norm_layer(self.norm_cfg, mid)[1],
            nn.ReLU(inplace=True),
            ConvModule(
                mid,
                stem_channels,
                3,
                padding=1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def make_res_layer(self, conv_cfg: Optional[dict], **kwargs):
        """The toolkit's ResLayer with an involution as every ``conv2``.

        The toolkit builds ``conv2`` from its ``dcn`` config, which it
        allows only without a ``conv_cfg``; a ``conv_cfg`` is then applied
        to the 1x1 convs here.
        """
        kwargs['dcn'] = dict(self.involution_cfg)
        layer = super().make_res_layer(conv_cfg=None, **kwargs)
        if conv_cfg is not None:
            for block in layer:
                block.conv1 = build_conv_layer(
                    conv_cfg,
                    block.inplanes,
                    block.planes,
                    1,
                    stride=block.conv1_stride,
                    bias=False)
                block.conv3 = build_conv_layer(
                    conv_cfg,
                    block.planes,
                    block.planes * block.expansion,
                    1,
                    bias=False)
                if block.downsample is not None:  # [AvgPool,] conv, norm
                    conv = block.downsample[-2]
                    block.downsample[-2] = build_conv_layer(
                        conv_cfg,
                        conv.in_channels,
                        conv.out_channels,
                        1,
                        stride=conv.stride,
                        bias=False)
        return layer

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Refuse a foreign backbone; keep the stem head when its K differs.

        A state dict whose keys under ``prefix`` have no involution (a
        ResNet's, whose 1x1 convs would otherwise half-load, only logged)
        raises a ValueError before anything is copied.

        The published ImageNet RedNets use a 3x3 stem involution
        (``stem.1.conv2`` has 2*3*3 = 18 outputs), the reference detection
        and segmentation models a 7x7 one (98 outputs). Such a checkpoint
        loads everything else; this head keeps its initialisation, with one
        warning that says so.
        """
        own = [key for key in state_dict if key.startswith(prefix)]
        if own and prefix + _INVOLUTION_KEY not in state_dict:
            raise ValueError(
                f'RedNet: the weights being loaded into '
                f'{prefix.rstrip(".") or "the backbone"} are not a RedNet\'s '
                f'(they have {own[0]!r} but no involution, e.g. no '
                f'{prefix + _INVOLUTION_KEY!r}): a ResNet checkpoint, say, '
                'whose 1x1 convs would load and the rest not. To fix it, '
                f'{_CHECKPOINT_ADVICE}.')
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

    def train(self, mode: bool = True) -> 'RedNet':
        """The toolkit's ``train`` (frozen stages, norm_eval), returning self.
        """
        super().train(mode)
        return self
