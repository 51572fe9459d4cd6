"""Backbones: RedNet here; ``xvolution_resnet`` (on mmdet's ResNet) and
``dcd_resnet``/``dcd_mobilenet_v2`` (on mmpretrain's) are imported by
:mod:`..models` where that toolkit is installed."""
from .rednet import RedNet

__all__ = ['RedNet']
