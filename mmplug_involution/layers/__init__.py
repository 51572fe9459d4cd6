"""``nn.Module`` layers built on :mod:`mmplug_involution.ops`."""
from .dynamic_conv import CondConv2d, DCDConv2d, DynamicConv2d
from .involution import Involution, InvolutionModule
from .xvolution import (GlobalSelfAttention, PixelShiftAttention, XVolution,
                        switch_xvolution_to_deploy)

__all__ = [
    'Involution', 'InvolutionModule', 'XVolution', 'PixelShiftAttention',
    'GlobalSelfAttention', 'switch_xvolution_to_deploy', 'CondConv2d',
    'DynamicConv2d', 'DCDConv2d'
]
