"""``nn.Module`` layers built on :mod:`mmplug_involution.ops`."""
from .involution import Involution, InvolutionModule

__all__ = ['Involution', 'InvolutionModule']
