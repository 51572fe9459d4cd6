"""Backbones and models built from :mod:`mmplug_involution.layers`."""
from .backbones import RedNet, RedNetBottleneck
from .classifiers import GlobalPoolClassifier

__all__ = ['RedNet', 'RedNetBottleneck', 'GlobalPoolClassifier']
