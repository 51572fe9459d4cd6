"""Checkpoint writes through the ``atomic_local`` backend are
all-or-nothing."""
import functools
import os

import pytest
import torch
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.runner import checkpoint

from mmplug_involution.runtime import (ATOMIC_LOCAL_BACKEND,
                                       AtomicLocalBackend, SafeCheckpointHook)

save_checkpoint = functools.partial(
    checkpoint.save_checkpoint,
    backend_args=dict(backend=ATOMIC_LOCAL_BACKEND))


def test_atomic_backend_is_added_and_local_is_kept(tmp_path):
    path = str(tmp_path / 'x.pth')
    assert isinstance(
        get_file_backend(path, backend_args=dict(backend='atomic_local')),
        AtomicLocalBackend)
    assert type(get_file_backend(path)) is LocalBackend


def test_the_safe_hook_writes_atomically_unless_told_otherwise():
    assert SafeCheckpointHook(interval=1).backend_args == dict(
        backend=ATOMIC_LOCAL_BACKEND)
    assert SafeCheckpointHook(
        interval=1, backend_args=dict(backend='local')).backend_args == dict(
            backend='local')
    assert SafeCheckpointHook(
        interval=1, out_dir='s3://bucket/run').backend_args is None


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(3)}}, str(path))
    before = path.read_bytes()

    def crash(*args):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint({'state_dict': {'w': torch.zeros(1000)}}, str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


def test_written_file_is_complete_and_readable(tmp_path):
    path = tmp_path / 'sub' / 'iter_3.pth'
    save_checkpoint({'state_dict': {'w': torch.arange(5.)}}, str(path))
    assert torch.equal(torch.load(path)['state_dict']['w'], torch.arange(5.))
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
