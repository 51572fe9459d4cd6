from .rednet import RedNet, RedNetBottleneck
from .xvolution_resnet import XVolutionResNet

__all__ = ['RedNet', 'RedNetBottleneck', 'XVolutionResNet']
