"""Backbones, necks, heads and models built from :mod:`..layers`."""
from .backbones import RedNet, XVolutionResNet
from .classifiers import GlobalPoolClassifier
from .dense_heads import InvolutionRPNHead
from .necks import InvolutionFPN
from .roi_heads import InvolutionFCNMaskHead

__all__ = [
    'RedNet', 'GlobalPoolClassifier', 'InvolutionFPN',
    'InvolutionRPNHead', 'InvolutionFCNMaskHead', 'XVolutionResNet'
]
