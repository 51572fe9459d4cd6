from .rednet import RedNet, RedNetBottleneck

__all__ = ['RedNet', 'RedNetBottleneck']
