"""ResNet with X-volution in place of the 3x3 convs of chosen stages."""
from typing import Optional, Sequence

import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.backbones import ResNet
from mmdet.models.backbones.resnet import BasicBlock

from ...registry import MODELS


class XVolutionBasicBlock(BasicBlock):
    """mmdet's ``BasicBlock`` with X-volutions as its 3x3 convs.

    ``conv2`` is an X-volution, and so is ``conv1`` where its input and
    output channels agree at stride 1 (every block of a stage but the
    first), since the local attentions aggregate the input's own channels;
    elsewhere ``conv1`` is a conv (``conv_cfg``). Same names and norms as
    BasicBlock, so a ResNet checkpoint's convs load into the X-volutions'
    conv branches.

    Args:
        dcn (dict): the X-volution layer config (the stage's ``dcn``, which
            mmdet's ResLayer passes on to its blocks).
        Others: as ``BasicBlock``, which has no ``style`` or ``plugins``.

    Shapes:
        (N, inplanes, H, W) -> (N, planes, ceil(H / stride), ceil(W /
        stride)).
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
                 dcn: Optional[dict] = None,
                 plugins: Optional[list] = None,
                 init_cfg: Optional[dict] = None) -> None:
        # BasicBlock builds plain convs inline and takes no dcn: skip to
        # its BaseModule and build the same modules with X-volutions
        super(BasicBlock, self).__init__(init_cfg)
        if dcn is None or plugins is not None:
            raise ValueError('XVolutionBasicBlock takes an X-volution '
                             'config as dcn, and no plugins.')
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        if inplanes == planes and stride == 1:
            self.conv1 = build_conv_layer(
                dcn,
                planes,
                planes,
                3,
                padding=dilation,
                dilation=dilation,
                bias=False)
        else:
            self.conv1 = build_conv_layer(
                conv_cfg,
                inplanes,
                planes,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = build_conv_layer(
            dcn, planes, planes, 3, padding=1, bias=False)
        self.add_module(self.norm2_name, norm2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation
        self.with_cp = with_cp


@MODELS.register_module()
class XVolutionResNet(ResNet):
    """mmdet's ``ResNet`` whose 3x3 convs in chosen stages are X-volutions.

    Stage 3 by default, where the paper found X-volution most useful (stage 4
    hurt). In Bottleneck networks (50, 101) every ``conv2`` of those stages
    becomes an X-volution (mmdet's ``dcn`` mechanism); in BasicBlock
    networks (18, 34) those stages are made of :class:`XVolutionBasicBlock`:
    every ``conv2`` is one, and every ``conv1`` whose input and output
    channels agree at stride 1 (all blocks but a stage's first).

    Args:
        depth (int): 18, 34, 50 or 101.
        xvolution (dict): the layer config. Default
            ``dict(type='XVolution', attention='pssa')``.
        stage_with_xvolution (Sequence[bool]): stages that get it.
            Default ``(False, False, True, False)``.
        **kwargs: the other ``ResNet`` arguments (``out_indices``,
            ``frozen_stages``, ``norm_cfg``, ``norm_eval``, ``init_cfg``,
            ...), except ``dcn``/``stage_with_dcn``.

    Shapes:
        (N, 3, H, W) -> the ResNet's stage outputs.

    Example:
        >>> import torch
        >>> model = XVolutionResNet(18, base_channels=16).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 80))]
        [(1, 16, 16, 20), (1, 32, 8, 10), (1, 64, 4, 5), (1, 128, 2, 3)]
    """

    arch_settings = {
        depth: ResNet.arch_settings[depth]
        for depth in (18, 34, 50, 101)
    }

    def __init__(self,
                 depth: int,
                 xvolution: dict = dict(type='XVolution', attention='pssa'),
                 stage_with_xvolution: Sequence[bool] = (False, False, True,
                                                         False),
                 **kwargs) -> None:
        if 'dcn' in kwargs or 'stage_with_dcn' in kwargs:
            raise ValueError('XVolutionResNet places X-volution with '
                             '`xvolution` and `stage_with_xvolution`; it '
                             'takes no `dcn`/`stage_with_dcn`.')
        if depth not in self.arch_settings:
            raise ValueError(f'invalid depth {depth} for XVolutionResNet; '
                             f'choose from {sorted(self.arch_settings)}.')
        super().__init__(
            depth,
            dcn=xvolution,
            stage_with_dcn=tuple(stage_with_xvolution),
            **kwargs)

    def train(self, mode: bool = True) -> 'XVolutionResNet':
        """mmdet's ``ResNet.train`` (freezing, norm_eval), returning self."""
        super().train(mode)
        return self

    def make_res_layer(self, **kwargs):
        """mmdet's ResLayer; an X-volution stage of a BasicBlock network is
        made of :class:`XVolutionBasicBlock` (a Bottleneck takes the
        X-volution as its ``dcn``)."""
        if kwargs['block'] is BasicBlock and kwargs['dcn'] is not None:
            kwargs['block'] = XVolutionBasicBlock
        return super().make_res_layer(**kwargs)
