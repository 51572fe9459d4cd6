"""Backbones, necks, heads and models built from :mod:`..layers`.

The parts built on mmdet (X-volution ResNet, the involution FPN and heads)
and on mmpretrain (the DCD authors' ResNet, MobileNetV2 and classifier
head) are imported where that toolkit is installed; elsewhere they are
stand-ins that say which extra to install (:mod:`..toolkits`).
"""
from ..toolkits import has_toolkit, register_stand_ins
from .backbones import RedNet

MMDET_PARTS = ('XVolutionResNet', 'InvolutionFPN', 'InvolutionRPNHead',
               'InvolutionFCNMaskHead')
MMPRETRAIN_PARTS = ('DCDResNet', 'DCDMobileNetV2', 'DCDClsHead')

if has_toolkit('mmdet'):
    from .backbones.xvolution_resnet import XVolutionResNet  # noqa: F401
    from .dense_heads import InvolutionRPNHead  # noqa: F401
    from .necks import InvolutionFPN  # noqa: F401
    from .roi_heads import InvolutionFCNMaskHead  # noqa: F401
else:
    globals().update(register_stand_ins('mmdet', MMDET_PARTS))

if has_toolkit('mmpretrain'):
    from .backbones.dcd_mobilenet_v2 import DCDMobileNetV2  # noqa: F401
    from .backbones.dcd_resnet import DCDResNet  # noqa: F401
    from .heads import DCDClsHead  # noqa: F401
else:
    globals().update(register_stand_ins('mmpretrain', MMPRETRAIN_PARTS))

__all__ = ['RedNet', *MMDET_PARTS, *MMPRETRAIN_PARTS]
