"""mmplug-involution: involution and dynamic convolutions for OpenMMLab.

Importing the package (configs do it through ``custom_imports``) registers
its layers and models in mmengine's root ``MODELS`` registry, its hook in
``HOOKS``, its configs in mmengine's table of packages whose configs
``package::PATH`` names reach, and its ops' ONNX translations with torch's
TorchScript exporter and (when onnxscript is installed) in onnxscript's
torchlib registry, which torch's dynamo exporter reads; nothing else outside
the package changes.
What the stock tools need on current torch (safe checkpoint loading, atomic
saves, resume) is the opt-in :mod:`mmplug_involution.runtime`.
"""
from . import engine, layers, models, ops
from .ops.onnx import register_onnx_symbolics, register_onnx_translations
from .registry import register_config_package
from .version import __version__

register_config_package()
register_onnx_symbolics()
register_onnx_translations()

__all__ = ['engine', 'layers', 'models', 'ops', '__version__']
