"""``nn.Module`` layers built on :mod:`mmplug_involution.ops`."""
from .involution import Involution

__all__ = ['Involution']
