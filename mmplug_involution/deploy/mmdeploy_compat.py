"""What mmdeploy 1.3.1 needs to export on current torch: opt in by import.

Neither ``import mmplug_involution`` nor ``import mmplug_involution.deploy``
imports this module. Importing it (or calling :func:`patch_mmdeploy`, which
is idempotent) mends, in this process and only where needed:

* mmdeploy's ONNX export call (``mmdeploy.apis.onnx.export``, the one
  ``torch2onnx`` and ``tools/deploy.py`` go through) calls
  ``torch.onnx.export`` without ``dynamo``, which torch >= 2.9 takes as the
  dynamo exporter; mmdeploy's rewriters and symbolics are the TorchScript
  exporter's. The name ``torch`` in that module of mmdeploy becomes a
  stand-in whose ``onnx.export`` defaults to ``dynamo=False`` and which
  hands every other attribute to torch; torch itself is unchanged.
* mmdeploy's RoIAlign symbolic imports
  ``torch.onnx.symbolic_opset9._cast_Long``, which newer torch lacks: it is
  added (a ``Cast`` to int64) when it is missing, and only then.

Where torch needs neither (``dynamo`` off by default, ``_cast_Long``
present: torch < 2.9), nothing changes. mmdeploy's Python API::

    import mmplug_involution.deploy.mmdeploy_compat  # noqa: F401
    from mmdeploy.apis import torch2onnx
    torch2onnx(img, work_dir, 'end2end.onnx', deploy_cfg, model_cfg, ...)

A patch in one process does not reach the processes mmdeploy starts
(``tools/deploy.py`` runs ``torch2onnx`` in a spawned child). List the
module in the model config's ``custom_imports`` instead: mmdeploy's child
loads the config file, and so imports it, before it builds the model and
exports::

    custom_imports = dict(imports=[
        'mmplug_involution', 'mmplug_involution.runtime',
        'mmplug_involution.deploy.mmdeploy_compat'
    ], allow_failed_imports=False)

:func:`unpatch_mmdeploy` undoes what was done (so there is no context
manager form: the import is the opt-in).
"""
import functools
import importlib
import inspect
import sys
import types

import torch

__all__ = [
    'MMDEPLOY_INSTALL', 'mmdeploy_needs_patch', 'is_mmdeploy_patched',
    'patch_mmdeploy', 'unpatch_mmdeploy'
]

MMDEPLOY_INSTALL = 'pip install --no-deps mmdeploy==1.3.1 aenum'
# the module whose ``torch.onnx.export(...)`` call is mended (the package
# ``mmdeploy.apis.onnx`` re-exports its function ``export`` under the same
# name, so it is reached through ``sys.modules``)
_EXPORT_MODULE = 'mmdeploy.apis.onnx.export'
_ONNX_INT64 = 7  # onnx.TensorProto.INT64
_MARK = '__mmplug_involution_stand_in__'


def _import_export_module() -> types.ModuleType:
    try:
        importlib.import_module(_EXPORT_MODULE)
    except ImportError as error:
        raise ImportError(
            'mmplug_involution.deploy.mmdeploy_compat mends mmdeploy, which '
            f'is not installed (or does not import: {error}). Install it '
            f'with `{MMDEPLOY_INSTALL}` (--no-deps: its metadata pins '
            'protobuf<=3.20.2, which current onnx does not accept).'
        ) from error
    module = sys.modules[_EXPORT_MODULE]
    if not isinstance(getattr(module, 'torch', None), types.ModuleType):
        raise RuntimeError(
            f'{_EXPORT_MODULE} no longer calls torch.onnx.export through '
            'its global name `torch`; this helper knows mmdeploy 1.3.1.')
    return module


def _defaults_to_dynamo() -> bool:
    """Whether ``torch.onnx.export`` uses the dynamo exporter unless told
    ``dynamo=False`` (torch >= 2.9)."""
    parameter = inspect.signature(torch.onnx.export).parameters.get('dynamo')
    return parameter is not None and parameter.default is True


def _torchscript_export(*args, **kwargs):
    """``torch.onnx.export`` with ``dynamo=False`` unless the caller names
    it."""
    kwargs.setdefault('dynamo', False)
    return torch.onnx.export(*args, **kwargs)


def _stand_in(name: str, target: types.ModuleType,
              **overrides) -> types.ModuleType:
    """A module named ``name`` that holds ``overrides`` and hands any other
    attribute to ``target`` (a module ``__getattr__``, PEP 562)."""
    module = types.ModuleType(name, target.__doc__)
    module.__dict__.update(overrides)
    module.__getattr__ = functools.partial(getattr, target)
    setattr(module, _MARK, True)
    return module


def _torch_stand_in() -> types.ModuleType:
    """``torch`` whose ``onnx.export`` is :func:`_torchscript_export`."""
    onnx = _stand_in('torch.onnx', torch.onnx, export=_torchscript_export)
    return _stand_in('torch', torch, onnx=onnx)


def _cast_long(g, input, non_blocking=False):
    """TorchScript symbolic of ``aten::_cast_Long`` (removed from torch's
    ``symbolic_opset9``): ``input`` (a graph value of any shape) as int64,
    one ONNX ``Cast``; ``non_blocking`` is ignored, as torch did."""
    return g.op('Cast', input, to_i=_ONNX_INT64)


def _opset9():
    return importlib.import_module('torch.onnx.symbolic_opset9')


def mmdeploy_needs_patch() -> dict:
    """Which mends this torch needs, whether or not they are applied:
    ``{'torchscript_export': bool, 'cast_long': bool}``."""
    opset9 = _opset9()
    return dict(
        torchscript_export=_defaults_to_dynamo(),
        cast_long=getattr(opset9, '_cast_Long', _cast_long) is _cast_long)


def is_mmdeploy_patched() -> bool:
    """Whether every mend this torch needs is in place (True where none is
    needed); False when mmdeploy's export module is not imported."""
    needs = mmdeploy_needs_patch()
    module = sys.modules.get(_EXPORT_MODULE)
    if module is None:
        return False
    if needs['torchscript_export'] and not getattr(module.torch, _MARK, False):
        return False
    return not needs['cast_long'] or hasattr(_opset9(), '_cast_Long')


def patch_mmdeploy() -> dict:
    """Apply the mends this torch needs (see the module docstring); calling
    it again changes nothing. Raises ImportError (saying what to install)
    when mmdeploy is not installed.

    Returns:
        ``{'torchscript_export': bool, 'cast_long': bool}``: what this call
        changed.
    """
    module = _import_export_module()
    changed = dict(torchscript_export=False, cast_long=False)
    if _defaults_to_dynamo() and not getattr(module.torch, _MARK, False):
        module.torch = _torch_stand_in()
        changed['torchscript_export'] = True
    opset9 = _opset9()
    if not hasattr(opset9, '_cast_Long'):
        opset9._cast_Long = _cast_long
        changed['cast_long'] = True
    return changed


def unpatch_mmdeploy() -> None:
    """Undo :func:`patch_mmdeploy`: mmdeploy's export module gets torch
    back, and ``_cast_Long`` goes where it was this module's."""
    module = sys.modules.get(_EXPORT_MODULE)
    if module is not None and getattr(module.torch, _MARK, False):
        module.torch = torch
    opset9 = _opset9()
    if getattr(opset9, '_cast_Long', None) is _cast_long:
        del opset9._cast_Long


patch_mmdeploy()
