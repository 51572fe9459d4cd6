"""Backbones, necks, heads and models built from :mod:`..layers`."""
from .backbones import RedNet, XVolutionResNet
from .dense_heads import InvolutionRPNHead
from .necks import InvolutionFPN
from .roi_heads import InvolutionFCNMaskHead

__all__ = [
    'RedNet', 'InvolutionFPN', 'InvolutionRPNHead', 'InvolutionFCNMaskHead',
    'XVolutionResNet'
]
