"""Checkpoints written so that a crash mid-write never corrupts a file.

mmengine's ``save_checkpoint`` (and so ``CheckpointHook``, ``--resume``)
writes through the ``local`` file backend, whose ``put`` opens the target and
writes into it: a crash or a full disk mid-write leaves a truncated file
under the checkpoint's name. :class:`AtomicLocalBackend` writes to a
temporary file in the same folder, flushes it to disk and renames it over
the target, so the target is either the old file or the complete new one.
It is registered as the file backend ``atomic_local`` (mmengine's ``local``
stays as it is), which :class:`~.checkpoint_hook.SafeCheckpointHook` writes
through unless its config names another backend.
"""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio.backends import LocalBackend, register_backend

__all__ = [
    'ATOMIC_LOCAL_BACKEND', 'AtomicLocalBackend', 'atomic_write',
    'register_atomic_local_backend'
]

ATOMIC_LOCAL_BACKEND = 'atomic_local'


def atomic_write(filepath: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``filepath`` via a temporary file and a rename."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{osp.basename(filepath)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have created it
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's LocalBackend with all-or-nothing ``put``/``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(filepath, obj)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))


def register_atomic_local_backend() -> None:
    """Register :class:`AtomicLocalBackend` as mmengine's file backend
    ``atomic_local`` (``backend_args=dict(backend='atomic_local')``)."""
    register_backend(ATOMIC_LOCAL_BACKEND, AtomicLocalBackend, force=True)
