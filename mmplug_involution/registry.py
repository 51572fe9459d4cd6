"""Where this package's classes are registered.

Everything goes into mmengine's root ``MODELS`` registry: mmdet's and mmseg's
``MODELS`` are its children, so a class registered here is found by plain name
from configs of either toolkit (``default_scope='mmdet'`` or ``'mmseg'``),
including nested builds such as ``conv_cfg=dict(type=...)`` inside mmcv's
``ConvModule``. Names must not clash with a toolkit's own entries, which would
shadow ours.
"""
from mmengine.registry import MODELS

__all__ = ['MODELS', 'CONFIG_PACKAGE', 'register_config_package']

#: the pip package whose ``.mim/configs`` holds the configs
CONFIG_PACKAGE = 'mmplug-involution'


def register_config_package() -> None:
    """Let mmengine resolve ``mmplug_involution::PATH`` config names.

    mmengine reads such a name only for the packages in its table of
    OpenMMLab packages (``MODULE2PACKAGE``); this adds ours, so a config can
    inherit ``_base_ = 'mmplug_involution::rednet/...'`` from the installed
    package's ``.mim/configs``, as from ``mmdet::``. Run when the package is
    imported; idempotent.
    """
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmplug_involution', CONFIG_PACKAGE)
