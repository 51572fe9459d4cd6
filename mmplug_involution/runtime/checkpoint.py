"""Safe checkpoint loading on current torch, never disabling ``weights_only``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
checkpoints (resume, ``load_from``, ``init_cfg=dict(type='Pretrained')``) then
fail on the non-tensor objects they carry: mmengine's ``HistoryBuffer`` (whose
pickled state names its statistic methods through ``getattr``) and numpy
arrays, scalars and dtypes. This module allow-lists exactly those globals, in
one place, when the package is imported, and makes mmengine's local-file
checkpoint loader use ``weights_only=True`` explicitly with clear errors: a
pickle that would run code is refused, a corrupt file is reported as such.
"""
import os.path as osp
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'UnsafeCheckpointError', 'safe_checkpoint_globals',
    'register_safe_checkpoint_globals', 'load_checkpoint_file'
]

# Statistic methods HistoryBuffer stores in its state
# (``_statistics_methods``).
_HISTORY_BUFFER_METHODS = frozenset(('min', 'max', 'current', 'mean'))


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled objects outside the allow-list.

    It could run code.
    """


def _history_buffer_method(owner: Any, name: str):
    """Stands in for ``getattr`` in checkpoints.

    Only HistoryBuffer statistic methods are allowed.
    """
    allowed = _HISTORY_BUFFER_METHODS | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'checkpoint asks for attribute {name!r} of {owner!r}; only the '
        f'statistic methods of mmengine HistoryBuffer ({sorted(allowed)}) '
        'are allowed.')


def safe_checkpoint_globals() -> List[Any]:
    """The globals (and name aliases) that mmengine checkpoints need."""
    multiarray = np._core.multiarray
    numpy_dtypes = [
        getattr(np.dtypes, name) for name in dir(np.dtypes)
        if name.endswith('DType')
    ]
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        *numpy_dtypes,
        multiarray._reconstruct,
        multiarray.scalar,
        # files written with numpy 1.x name numpy.core instead of numpy._core
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        (_history_buffer_method, 'builtins.getattr'),
        (_history_buffer_method, '__builtin__.getattr'),
    ]


def register_safe_checkpoint_globals() -> None:
    """Allow-list :func:`safe_checkpoint_globals`.

    Also route mmengine's local loads here. Idempotent; called when
    :mod:`mmplug_involution` is imported.
    """
    torch.serialization.add_safe_globals(safe_checkpoint_globals())
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_safe, force=True)


def load_checkpoint_file(filename: str, map_location=None) -> Any:
    """``torch.load(filename, weights_only=True)``.

    Its errors say what to do. Registered as mmengine's loader for local
    paths, so ``load_from``, ``--resume`` and
    ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` all go through it.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references code outside the
            allow-list.
        RuntimeError: the file is not a readable torch checkpoint
            (corrupt/truncated).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).strip().splitlines()
        reason = next(
            (line.strip() for line in detail if 'Unsupported global' in line
             or 'unrecognized function' in line or 'Can only' in line),
            detail[-1] if detail else '')
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {filename}: it contains pickled '
            f'objects that could run code ({reason}). mmplug_involution loads '
            'checkpoints with weights_only=True and allows only tensors, '
            'plain containers and the types mmengine saves. If you made this '
            'file and trust it, load it yourself with torch.load(..., '
            'weights_only=False) and re-save just its state_dict.') from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise RuntimeError(
            f'Could not read checkpoint {filename}: it is not a valid torch '
            f'checkpoint or it is truncated/corrupt ({exc}). Re-download or '
            're-save it; for --resume, point to an earlier checkpoint.'
        ) from exc


def load_from_local_safe(filename: str, map_location=None) -> Any:
    """:func:`load_checkpoint_file` under the name mmengine logs.

    mmengine prints ``Loads checkpoint by <name[10:]> backend``, so this
    reads "local_safe" in training logs.
    """
    return load_checkpoint_file(filename, map_location)
