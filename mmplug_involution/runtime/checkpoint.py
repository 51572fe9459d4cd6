"""Safe checkpoint loading on current torch, never disabling ``weights_only``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
checkpoints (resume, ``load_from``, ``init_cfg=dict(type='Pretrained')``) then
fail on the non-tensor objects they carry: mmengine's ``HistoryBuffer`` (whose
pickled state names its statistic methods through ``getattr``) and numpy
arrays, scalars and dtypes. :func:`register_safe_checkpoint_loading` (run
when :mod:`mmplug_involution.runtime` is imported) allow-lists exactly those
globals, in one place, and makes mmengine's local-file checkpoint loader use
``weights_only=True`` explicitly with clear errors: a
pickle that would run code is refused (naming what it would import), and
every other failure to read the file, whatever torch's readers raise, is
reported as a :class:`CheckpointError` that names the file and says what to do.
Zip checkpoints (every ``torch.save`` since 1.6)
carry a CRC-32 of every member, which the loader verifies first, so a flipped
bit is reported instead of loaded.
"""
import functools
import importlib
import io
import logging
import os.path as osp
import pickle
import pickletools
import re
import zipfile
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'CheckpointError', 'UnsafeCheckpointError', 'CorruptCheckpointError',
    'safe_checkpoint_globals', 'pickled_array_globals',
    'register_safe_checkpoint_loading', 'load_checkpoint_file',
    'verify_checkpoint_archive'
]

# Statistic methods HistoryBuffer stores in its state
# (``_statistics_methods``).
_HISTORY_BUFFER_METHODS = frozenset(('min', 'max', 'current', 'mean'))


class CheckpointError(Exception):
    """A checkpoint file cannot be loaded.

    The message names the file and says what to do. Raised as such for a
    file that cannot be read (permissions, a folder, memory) or holds CUDA
    tensors where CUDA is missing; its subclasses say more.
    """


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint holds pickled objects outside the allow-list.

    It could run code.
    """


class CorruptCheckpointError(CheckpointError, RuntimeError):
    """A checkpoint file is damaged: truncated, not a checkpoint, or its data
    does not match its checksums."""


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


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles call to
    store bytes (numpy arrays' data); only the latin-1 codec is allowed."""
    if not (isinstance(text, str) and isinstance(encoding, str)
            and encoding.lower().replace('-', '') == 'latin1'):
        raise UnsafeCheckpointError(
            f'the pickle calls _codecs.encode with {encoding!r}; only the '
            'latin-1 codec that pickled bytes use is allowed.')
    return text.encode('latin-1')


@functools.lru_cache(maxsize=None)
def pickled_array_globals() -> Dict[str, Callable]:
    """Full name -> object for every import a pickle of numpy arrays makes:
    ``numpy.ndarray``, ``numpy.dtype``, numpy's array and scalar
    reconstructors (under numpy 1's ``numpy.core`` and numpy 2's
    ``numpy._core`` names, whichever numpy runs) and ``_codecs.encode`` for
    latin-1 bytes only. The checkpoint allow-list and the PaddleClas
    converter's reader both take theirs from here."""
    multiarray = importlib.import_module(  # numpy 2 renamed core to _core
        'numpy._core.multiarray'
        if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core.multiarray')
    allowed = {
        'numpy.ndarray': np.ndarray,
        'numpy.dtype': np.dtype,
        '_codecs.encode': _latin1_encode
    }
    for function in (multiarray._reconstruct, multiarray.scalar):
        for module in ('numpy.core', 'numpy._core'):
            allowed[f'{module}.multiarray.{function.__name__}'] = function
    return allowed


def _spelled(function: Callable, full_name: str) -> Callable:
    """``function`` as torch's allow-list finds it under ``full_name``.

    torch keys the list by each entry's ``__module__`` and ``__qualname__``;
    an entry under another name (an alias) is a stand-in that spells it and
    calls ``function``. (torch 2.5 and later also take ``(function, name)``
    pairs; torch 2.4 does not.)
    """
    module, _, name = full_name.rpartition('.')
    if (function.__module__, function.__qualname__) == (module, name):
        return function

    def stand_in(*args, **kwargs):
        return function(*args, **kwargs)

    stand_in.__module__, stand_in.__name__ = module, name
    stand_in.__qualname__ = name
    return stand_in


@functools.lru_cache(maxsize=None)
def safe_checkpoint_globals() -> List[Any]:
    """The globals (and name aliases) that mmengine checkpoints need."""
    numpy_dtypes = [
        getattr(np.dtypes, name) for name in dir(np.dtypes)
        if name.endswith('DType')
    ]
    return [
        HistoryBuffer,
        *numpy_dtypes,
        *(_spelled(function, name)
          for name, function in pickled_array_globals().items()),
        _spelled(_history_buffer_method, 'builtins.getattr'),
        _spelled(_history_buffer_method, '__builtin__.getattr'),
    ]


def register_safe_checkpoint_loading() -> None:
    """Allow-list :func:`safe_checkpoint_globals` in torch and make
    :func:`load_checkpoint_file` mmengine's loader of local paths.

    Idempotent; run when :mod:`mmplug_involution.runtime` is imported.
    """
    torch.serialization.add_safe_globals(safe_checkpoint_globals())
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_safe, force=True)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _out_of_memory(filename: str) -> CheckpointError:
    size = osp.getsize(filename) / 2**20
    return CheckpointError(
        f'Ran out of memory loading checkpoint {filename} ({size:.1f} MiB). '
        'A damaged file can claim more data than it holds: check the file '
        '(tools/analysis/check_checkpoint.py) or re-download it; a sound one '
        'needs map_location="cpu" or a machine with more memory.')


def _corrupt(filename: str, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f'Checkpoint {filename} is corrupt or truncated ({why}). Re-download '
        'it, or use an earlier checkpoint (for --resume, pass --resume PATH '
        'of an earlier one).')


def verify_checkpoint_archive(filename: str) -> bool:
    """Checks the CRC-32 of every member of a zip checkpoint.

    Returns False for a file that is not a zip archive (a legacy checkpoint,
    or not a checkpoint at all: torch.load decides).
    """
    try:
        if not zipfile.is_zipfile(filename):
            return False
        with zipfile.ZipFile(filename) as archive:
            damaged = archive.testzip()
    except MemoryError as exc:
        raise _out_of_memory(filename) from exc
    except Exception as exc:  # whatever a damaged archive makes zipfile raise
        raise _corrupt(filename,
                       f'unreadable archive: {_first_line(exc)}') from exc
    if damaged is not None:
        raise _corrupt(filename,
                       f'the CRC-32 of {damaged} does not match its data')
    return True


def _pickle_parses(filename: str, is_zip: bool) -> bool:
    """Whether the checkpoint's pickles are well formed (read, never run)."""
    try:
        if is_zip:
            with zipfile.ZipFile(filename) as archive:
                name = next(n for n in archive.namelist()
                            if n.endswith('data.pkl'))
                data, count = io.BytesIO(archive.read(name)), 1
        else:  # legacy: magic number, protocol, sys info, then the object
            with open(filename, 'rb') as f:
                data, count = io.BytesIO(f.read()), 4
        for _ in range(count):
            for _op in pickletools.genops(data):
                pass
    except Exception:  # any failure to parse: not a well-formed pickle
        return False
    return True


def _refusal_reason(message: str) -> Optional[str]:
    """What a refused pickle would have done, from torch's message."""
    found = re.search(r'GLOBAL ([\w.]+)', message, re.IGNORECASE)
    if found:
        return f'it would import {found.group(1)}'
    for line in message.splitlines():
        if 'checkpoint asks for attribute' in line:
            return line.strip()
    return None


def load_checkpoint_file(filename: str, map_location=None) -> Any:
    """``torch.load(filename, weights_only=True)``.

    Its errors say what to do. Registered as mmengine's loader for local
    paths, so ``load_from``, ``--resume`` and
    ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` all go through it.
    Zip checkpoints have every member's CRC-32 verified first.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references code outside the
            allow-list (the message names it).
        CorruptCheckpointError: the file is truncated, damaged (a checksum
            does not match) or not a torch checkpoint, whatever exception
            torch's readers raised on it.
        CheckpointError: the file can not be read (a folder, permissions,
            memory) or holds CUDA tensors in a process without CUDA.
    """
    filename = osp.expanduser(filename)
    if osp.isdir(filename):
        raise CheckpointError(
            f'checkpoint {filename} is a folder; give the checkpoint file in '
            'it (e.g. its last_checkpoint names the newest).')
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    try:
        with open(filename, 'rb'):
            pass
    except OSError as exc:
        raise CheckpointError(
            f'checkpoint {filename} can not be read: {exc.strerror}. Check '
            'its permissions.') from exc
    is_zip = verify_checkpoint_archive(filename)
    if not is_zip:
        print_log(
            f'Checkpoint {filename} is in torch\'s legacy (non-zip) format, '
            'which carries no checksums: damage to its tensor data can not '
            'be detected. Re-save it with torch.save to have it checked.',
            logger='current',
            level=logging.WARNING)
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_failure(filename, is_zip, exc) from exc
    except MemoryError as exc:
        raise _out_of_memory(filename) from exc
    except Exception as exc:  # whatever torch's readers raise on bad bytes
        if _CUDA_DESERIALIZE.search(str(exc)):
            raise CheckpointError(
                f'checkpoint {filename} holds CUDA tensors and this process '
                'has no CUDA device: load it with map_location="cpu" (the '
                'tools and mmengine\'s load_checkpoint do).') from exc
        if is_zip and _pickle_parses(filename, is_zip):
            raise CheckpointError(
                f'Checkpoint {filename} did not load ({_first_line(exc)}), '
                'though its checksums match and its pickle is well formed: '
                'the file looks sound, and the torch or numpy of this process '
                'may not read what the one that wrote it did. Load it where '
                'it was written and re-save its state_dict.') from exc
        raise _corrupt(filename, _first_line(exc)) from exc


#: torch's message for CUDA tensors loaded without CUDA
_CUDA_DESERIALIZE = re.compile(r'deserialize object on (a )?CUDA device')


def _unpickling_failure(filename: str, is_zip: bool,
                        exc: pickle.UnpicklingError) -> CheckpointError:
    """A refusal naming what the pickle would import, or, for a pickle that
    does not parse, the corrupt-file error."""
    reason = _refusal_reason(str(exc))
    if reason is None and not _pickle_parses(filename, is_zip):
        return _corrupt(filename, 'its pickle does not parse')
    if reason is None:
        detail = [
            line.strip() for line in str(exc).splitlines() if line.strip()
        ]
        reason = ('it uses pickle operations checkpoints do not need: ' +
                  (detail[-2] if len(detail) > 1 else str(exc)))
    return UnsafeCheckpointError(
        f'Refused to load checkpoint {filename}: {reason}, which could run '
        'code. mmplug_involution loads checkpoints with weights_only=True, '
        'allowing tensors, plain containers and the types mmengine saves. If '
        'the file is your own, re-save just its tensors (the state_dict) in '
        'the process that made it.')


def load_from_local_safe(filename: str, map_location=None) -> Any:
    """:func:`load_checkpoint_file` under the name mmengine logs.

    mmengine prints ``Loads checkpoint by <name[10:]> backend``, so this
    reads "local_safe" in training logs.
    """
    return load_checkpoint_file(filename, map_location)
