"""Where this package's classes are registered.

Everything goes into mmengine's root ``MODELS`` registry: mmdet's and mmseg's
``MODELS`` are its children, so a class registered here is found by plain name
from configs of either toolkit (``default_scope='mmdet'`` or ``'mmseg'``),
including nested builds such as ``conv_cfg=dict(type=...)`` inside mmcv's
``ConvModule``. Names must not clash with a toolkit's own entries, which would
shadow ours.
"""
from mmengine.registry import MODELS

__all__ = ['MODELS']
