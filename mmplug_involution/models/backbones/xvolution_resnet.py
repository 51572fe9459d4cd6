"""ResNet with X-volution in place of the 3x3 convs of chosen stages."""
from typing import Sequence

from mmcv.cnn import build_conv_layer
from mmdet.models.backbones import ResNet
from mmdet.models.backbones.resnet import BasicBlock

from ...registry import MODELS


@MODELS.register_module()
class XVolutionResNet(ResNet):
    """mmdet's ``ResNet`` whose 3x3 convs in chosen stages are X-volutions.

    Stage 3 by default, where the paper found X-volution most useful (stage 4
    hurt). In Bottleneck networks (50, 101) every ``conv2`` of those stages
    becomes an X-volution (mmdet's ``dcn`` mechanism); in BasicBlock
    networks (18, 34) every ``conv2`` does, and every ``conv1`` whose input
    and output channels agree at stride 1 (all blocks but a stage's first),
    since the local attentions aggregate the input's own channels.

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
        """mmdet's ResLayer; BasicBlock stages get their X-volutions here."""
        if kwargs['block'] is not BasicBlock or kwargs['dcn'] is None:
            return super().make_res_layer(**kwargs)  # Bottleneck: dcn path
        xvolution = kwargs.pop('dcn')
        layer = super().make_res_layer(dcn=None, **kwargs)
        for block in layer:
            block.conv2 = build_conv_layer(
                xvolution,
                block.conv2.in_channels,
                block.conv2.out_channels,
                3,
                padding=1,
                bias=False)
            conv1 = block.conv1
            if conv1.in_channels == conv1.out_channels and \
                    conv1.stride == (1, 1):
                block.conv1 = build_conv_layer(
                    xvolution,
                    conv1.in_channels,
                    conv1.out_channels,
                    3,
                    padding=block.dilation,
                    dilation=block.dilation,
                    bias=False)
        return layer
