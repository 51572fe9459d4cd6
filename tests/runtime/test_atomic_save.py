"""Checkpoint writes are all-or-nothing."""
import os

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner.checkpoint import save_checkpoint

import mmplug_involution  # noqa: F401  (registers the atomic backend)
from mmplug_involution.runtime import AtomicLocalBackend


def test_local_backend_is_atomic(tmp_path):
    assert isinstance(get_file_backend(str(tmp_path / 'x.pth')),
                      AtomicLocalBackend)


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
    assert torch.equal(
        torch.load(path)['state_dict']['w'], torch.arange(5.))
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
