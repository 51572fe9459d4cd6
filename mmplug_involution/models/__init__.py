"""Backbones, necks, heads and models built from :mod:`..layers`.

The parts built on mmdet (X-volution ResNet, the involution FPN and heads)
are imported where mmdet is installed; elsewhere they are stand-ins that say
which extra to install (:mod:`..toolkits`).
"""
from ..toolkits import has_toolkit, register_stand_ins
from .backbones import RedNet

MMDET_PARTS = ('XVolutionResNet', 'InvolutionFPN', 'InvolutionRPNHead',
               'InvolutionFCNMaskHead')

if has_toolkit('mmdet'):
    from .backbones.xvolution_resnet import XVolutionResNet  # noqa: F401
    from .dense_heads import InvolutionRPNHead  # noqa: F401
    from .necks import InvolutionFPN  # noqa: F401
    from .roi_heads import InvolutionFCNMaskHead  # noqa: F401
else:
    globals().update(register_stand_ins('mmdet', MMDET_PARTS))

__all__ = ['RedNet', *MMDET_PARTS]
