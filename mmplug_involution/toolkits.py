"""The OpenMMLab toolkits that parts of the package build on.

mmsegmentation is a requirement (RedNet builds on its ResNet); mmdet is the
``det`` extra. Where a toolkit is missing, the parts built on it are
registered as stand-ins that raise an ImportError naming the extra to
install, when a config (or code) builds them.
"""
import importlib.util
from typing import Callable, Dict, Iterable

from .registry import MODELS

__all__ = ['TOOLKIT_EXTRAS', 'has_toolkit', 'register_stand_ins']

#: toolkit module -> the extra of mmplug-involution that installs it
TOOLKIT_EXTRAS = {'mmdet': 'det', 'mmseg': 'seg', 'mmpretrain': 'cls'}


def has_toolkit(module: str) -> bool:
    """Whether the toolkit ``module`` (``mmdet``, ...) can be imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _stand_in(name: str, module: str) -> Callable:

    def stand_in(*args, **kwargs):
        raise ImportError(
            f'{name} builds on {module}, which is not installed: pip install '
            f'"mmplug-involution[{TOOLKIT_EXTRAS[module]}]" (or install '
            f'{module} yourself).')

    stand_in.__name__ = stand_in.__qualname__ = name
    return stand_in


def register_stand_ins(module: str,
                       names: Iterable[str]) -> Dict[str, Callable]:
    """Register, under each of ``names``, a function that raises the
    ImportError saying which extra installs ``module``; returns them by
    name."""
    stand_ins = {name: _stand_in(name, module) for name in names}
    for name, stand_in in stand_ins.items():
        MODELS.register_module(name=name, module=stand_in)
    return stand_ins
