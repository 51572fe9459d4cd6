"""mmplug-involution: involution and dynamic convolutions for mmdet and mmseg.

Importing the package (configs do it through ``custom_imports``) registers
every layer and model in mmengine's root ``MODELS`` registry (and its hooks in
``HOOKS``), applies the safe
checkpoint allow-list, makes checkpoint writes atomic, lets mmengine's auto
resume find the newest complete checkpoint, teaches mmengine's complexity
analysis to count the involution op and both ONNX exporters to translate it.
"""
from . import datasets, engine, layers, models, ops
from .ops.onnx import register_onnx_symbolics, register_onnx_translations
from .runtime import (register_atomic_local_backend,
                      register_complexity_handles,
                      register_resumable_checkpoint_finder,
                      register_safe_checkpoint_globals)
from .version import __version__

register_safe_checkpoint_globals()
register_complexity_handles()
register_atomic_local_backend()
register_resumable_checkpoint_finder()
register_onnx_symbolics()
register_onnx_translations()

__all__ = ['datasets', 'engine', 'layers', 'models', 'ops', '__version__']
