"""RedNet (Li et al., CVPR 2021): ResNet with involution bottlenecks."""
import inspect
import logging
import re
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import Sequential
from mmseg.models.backbones import ResNet
from mmseg.models.backbones.resnet import Bottleneck
from mmseg.models.utils import ResLayer
from torch import Tensor

from ...layers import Involution
from ...ops import memory_format_of
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
#: where mmseg's Bottleneck runs plugins
_PLUGIN_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


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


class InvolutionBottleneck(Bottleneck):
    """mmseg's ``Bottleneck`` whose ``conv2`` is a K x K involution.

    The modules, their names (``conv1``, ``bn1``, ``conv2``, ``bn2``,
    ``conv3``, ``bn3``, ``downsample``, plugins) and the forward are
    Bottleneck's; ``conv2`` is an :class:`Involution` with the block's
    stride (``style``) and dilation, and the 1x1 convs follow
    ``conv_cfg``.

    Args:
        involution_cfg (dict): :class:`Involution` keyword arguments of
            ``conv2`` (``kernel_size``, ``group_channels``,
            ``reduction_ratio``, ``norm_cfg``).
        Others: as mmseg's ``Bottleneck``, which also takes a ``dcn``.

    Shapes:
        (N, inplanes, H, W) -> (N, 4 * planes, ceil(H / stride),
        ceil(W / stride)).
    """

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch',
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 plugins: Optional[list] = None,
                 init_cfg: Optional[dict] = None,
                 *,
                 involution_cfg: dict) -> None:
        # Bottleneck builds conv2 as a conv, or from a dcn only without a
        # conv_cfg: skip to its BaseModule and build the same modules with
        # an involution as conv2
        super(Bottleneck, self).__init__(init_cfg)
        self.inplanes, self.planes = inplanes, planes
        self.stride, self.dilation = stride, dilation
        self.style, self.with_cp = style, with_cp
        self.conv_cfg, self.norm_cfg = conv_cfg, norm_cfg
        self.dcn, self.with_dcn = None, False
        self.plugins, self.with_plugins = plugins, plugins is not None
        for position in _PLUGIN_POSITIONS:
            setattr(self, f'{position}_plugins', [
                plugin['cfg']
                for plugin in plugins or [] if plugin['position'] == position
            ])
        if style == 'pytorch':
            self.conv1_stride, self.conv2_stride = 1, stride
        else:
            self.conv1_stride, self.conv2_stride = stride, 1
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(
            norm_cfg, planes * self.expansion, postfix=3)
        self.conv1 = build_conv_layer(
            conv_cfg,
            inplanes,
            planes,
            1,
            stride=self.conv1_stride,
            bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = Involution(
            planes,
            planes,
            stride=self.conv2_stride,
            dilation=dilation,
            **involution_cfg)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = build_conv_layer(
            conv_cfg, planes, planes * self.expansion, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        if self.with_plugins:
            widths = (planes, planes, planes * self.expansion)
            for position, width in zip(_PLUGIN_POSITIONS, widths):
                names = self.make_block_plugins(
                    width, getattr(self, f'{position}_plugins'))
                setattr(self, f'{position}_plugin_names', names)


@MODELS.register_module()
class RedNet(ResNet):
    """RedNet backbone: the toolkit's ResNet with involution bottlenecks.

    mmseg's ``ResNet`` (which takes every argument of mmdet's and adds
    ``multi_grid`` and ``contract_dilation``) with RedNet's stem (3x3 conv
    s2, involution, norm, ReLU, 3x3 conv, max-pool) and
    :class:`InvolutionBottleneck` blocks: a K x K involution as every
    ``conv2``. Stages, strides, dilations, ``style``, ``avg_down``,
    ``plugins``, ``with_cp``, freezing, ``norm_eval`` and initialisation are
    the toolkit's. The state dict is the reference implementation's key for
    key (``stem.0.conv.weight``, ``stem.1.conv1.conv.weight``,
    ``layer1.0.conv2.conv1.conv.weight``, ``layer1.0.bn1.*``,
    ``layer1.0.downsample.0.weight``, ...).

    Args:
        depth (int): 26, 38, 50, 101 or 152.
        stem_kernel_size (int): K of the stem involution: 3 in the published
            ImageNet models, 7 (the default) in the reference detection and
            segmentation models; loading an ImageNet checkpoint then keeps
            the stem's kernel-generator head (``stem.1.conv2``) at its
            initialisation, with a warning.
        kernel_size (int): K of the bottleneck involutions. Default 7.
        group_channels (int): channels per involution group. Default 16.
        reduction_ratio (int): involution kernel-generator reduction.
            Default 4.
        expansion, drop_path_rate: arguments of mmpretrain's ``ResNet``,
            taken only as None/4 and 0 (RedNet's bottlenecks expand by 4
            and have no stochastic depth).
        **kwargs: the other arguments of mmseg's ``ResNet``, with these
            differences: ``stem_channels`` may be None (as
            ``base_channels``, as in mmdet's ResNet; the stem involution
            works on half of them); ``norm_eval`` defaults to True, as in
            mmdet's ResNet; ``conv_cfg`` configures the 1x1 and the stem
            convs; ``frozen_stages=0`` freezes the stem; ``dilations`` reach
            the involutions (``strides=(1, 2, 1, 1), dilations=(1, 1, 2,
            4)`` gives output stride 8) and ``multi_grid`` gives one
            dilation per block of the last stage. ``deep_stem=True`` and a
            ``dcn`` are refused (RedNet has its own stem, and every
            ``conv2`` is an involution). ``pretrained`` and a Pretrained
            ``init_cfg`` must name a RedNet checkpoint: a ResNet one (a
            stock base's ``torchvision://resnet50``,
            ``open-mmlab://resnet50_v1c``) is refused by name before any
            download and, by its keys, when it loads.

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

    #: depth -> (block, blocks per stage). The block is mmseg's Bottleneck,
    #: whose expansion and zero-init ResNet reads; :meth:`make_res_layer`
    #: builds :class:`InvolutionBottleneck` blocks.
    arch_settings = {
        26: (Bottleneck, (1, 2, 4, 1)),
        38: (Bottleneck, (2, 3, 5, 2)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 *,
                 stem_kernel_size: int = 7,
                 kernel_size: int = 7,
                 group_channels: int = 16,
                 reduction_ratio: int = 4,
                 expansion: Optional[int] = None,
                 drop_path_rate: float = 0.,
                 **kwargs) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'invalid depth {depth} for RedNet; choose from '
                             f'{sorted(self.arch_settings)}.')
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
        kwargs.setdefault('norm_eval', True)
        resnet_args = inspect.signature(super().__init__).bind(depth, **kwargs)
        resnet_args.apply_defaults()
        args = resnet_args.arguments
        self._check_resnet_arguments(**args)
        if args['stem_channels'] is None:
            args['stem_channels'] = args['base_channels']
        # read by _make_stem_layer and make_res_layer, which ResNet calls
        self.stem_kernel_size = stem_kernel_size
        self.involution_cfg = dict(
            kernel_size=kernel_size,
            group_channels=group_channels,
            reduction_ratio=reduction_ratio,
            norm_cfg=args['norm_cfg'])
        super().__init__(**args)

    @classmethod
    def _check_resnet_arguments(cls, depth, num_stages, strides, dilations,
                                out_indices, style, deep_stem, frozen_stages,
                                dcn, multi_grid, pretrained, init_cfg,
                                **_) -> None:
        """Refuse the ResNet arguments RedNet cannot honour, with a
        ValueError that says why (where ResNet asserts or ignores them)."""
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
        if style not in ('pytorch', 'caffe'):
            raise ValueError(
                f"style must be 'pytorch' or 'caffe', got {style!r}.")
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
        last_blocks = cls.arch_settings[depth][1][:num_stages][-1]
        if multi_grid is not None and len(multi_grid) != last_blocks:
            raise ValueError(
                f'multi_grid {tuple(multi_grid)} needs one dilation per block '
                f'of the last stage: RedNet-{depth} has {last_blocks} there.')
        for name in _pretrained_checkpoints(init_cfg, pretrained):
            check_not_resnet_checkpoint(name)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        """``stem``: conv 3x3 s2 -> involution -> norm -> ReLU -> conv 3x3;
        then ``maxpool``."""
        mid = stem_channels // 2
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
            Involution(
                mid, mid,
                **dict(self.involution_cfg,
                       kernel_size=self.stem_kernel_size)),
            build_norm_layer(self.norm_cfg, mid)[1], nn.ReLU(inplace=True),
            ConvModule(
                mid,
                stem_channels,
                3,
                padding=1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def make_res_layer(self, dcn: None, **kwargs) -> ResLayer:
        """mmseg's ResLayer of :class:`InvolutionBottleneck` blocks (``dcn``
        is None: RedNet takes none)."""
        return super().make_res_layer(**dict(
            kwargs,
            block=InvolutionBottleneck,
            involution_cfg=self.involution_cfg))

    def _freeze_stages(self) -> None:
        """Freeze the stem (``frozen_stages >= 0``) and ``layer1`` to
        ``layer{frozen_stages}``: eval mode, no gradients."""
        frozen = [self.stem] if self.frozen_stages >= 0 else []
        frozen += [
            getattr(self, f'layer{i}')
            for i in range(1, self.frozen_stages + 1)
        ]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(N, C, H, W) -> the outputs of the ``out_indices`` stages, in
        ``x``'s memory format.

        On CPU the network runs in channels_last whatever ``x``'s format:
        ``x`` is converted once, before the stem, and the outputs are
        converted back (the involution CPU kernels' fused paths are NHWC).
        Not while traced, compiled or exported: a graph has no layout, and
        the format checks would constrain its shapes.
        """
        convert = x.device.type == 'cpu' and not (
            torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling())
        memory_format = memory_format_of(x) if convert else None
        if convert:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.stem(x))
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(
                    x.contiguous(
                        memory_format=memory_format) if convert else x)
        return tuple(outs)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys,
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
