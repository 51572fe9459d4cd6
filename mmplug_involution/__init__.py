"""mmplug-involution: involution and dynamic convolutions for mmdet and mmseg.

Importing the package (configs do it through ``custom_imports``) registers
every layer in mmengine's root ``MODELS`` registry and applies the safe
checkpoint allow-list.
"""
from . import layers, ops
from .runtime import register_safe_checkpoint_globals
from .version import __version__

register_safe_checkpoint_globals()

__all__ = ['layers', 'ops', '__version__']
