"""Backbones: RedNet here; ``xvolution_resnet`` (on mmdet's ResNet) is
imported by :mod:`..models` where mmdet is installed."""
from .rednet import RedNet

__all__ = ['RedNet']
