from .rednet import RedNet
from .xvolution_resnet import XVolutionResNet

__all__ = ['RedNet', 'XVolutionResNet']
