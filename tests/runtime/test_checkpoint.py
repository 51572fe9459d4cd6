"""Checkpoints load with weights_only=True.

Code-running pickles are refused.
"""
import pathlib

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

from mmplug_involution.runtime import (CheckpointError, CorruptCheckpointError,
                                       UnsafeCheckpointError,
                                       load_checkpoint_file)


class _TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, y, mode='loss'):
        out = self.linear(x)
        if mode == 'loss':
            return dict(loss=((out - y)**2).mean())
        return out


class _TinyData(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.full((2, ), float(i)), y=torch.ones(1))


def _runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=_TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_TinyData(),
            batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0))


def test_mmengine_checkpoint_loads_and_resumes(tmp_path):
    _runner(tmp_path, max_epochs=1).train()
    ckpt = tmp_path / 'epoch_1.pth'
    # plain torch.load with its weights_only=True default now works too
    data = torch.load(ckpt)
    hub = data['message_hub']['log_scalars']
    assert isinstance(hub['train/loss'], HistoryBuffer)
    assert np.isfinite(hub['train/loss'].mean())
    assert _load_checkpoint(str(ckpt))['meta']['epoch'] == 1
    resumed = _runner(tmp_path, max_epochs=2, resume=True)
    resumed.train()
    assert resumed.epoch == 2 and resumed.iter == 8


class _RunsCode:
    """Pickles as a call that creates a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker), ))


class _GetattrEscape:
    """Pickles as getattr(HistoryBuffer, '__init__').

    That is outside the allowed methods.
    """

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('payload,zip_format', [('code', True),
                                                ('code', False),
                                                ('getattr', True)])
def test_code_running_pickle_is_refused(tmp_path, payload, zip_format):
    marker = tmp_path / 'pwned'
    evil = _RunsCode(marker) if payload == 'code' else _GetattrEscape()
    path = tmp_path / 'evil.pth'
    torch.save({
        'state_dict': {
            'w': torch.ones(1)
        },
        'meta': evil
    },
               path,
               _use_new_zipfile_serialization=zip_format)
    wanted = ('it would import pathlib'
              if payload == 'code' else "asks for attribute '__init__'")
    for load in (load_checkpoint_file, _load_checkpoint):
        with pytest.raises(UnsafeCheckpointError) as error:
            load(str(path))
        message = str(error.value)
        assert message.startswith(f'Refused to load checkpoint {path}')
        assert wanted in message
        assert 'weights_only=False' not in message
    assert not marker.exists()


def _damaged_copies(tmp_path):
    """A good checkpoint and damaged copies of it, by what was done."""
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.randn(300, 300)}}, good)
    data = good.read_bytes()
    flipped = bytearray(data)
    middle = len(data) // 2
    flipped[middle:middle + 4096] = bytes(
        b ^ 0xFF for b in flipped[middle:middle + 4096])
    damaged = {
        'truncated':
        data[:len(data) // 2],
        'bit flips in a tensor':
        bytes(flipped),
        'random bytes':
        torch.randint(
            0,
            256, (4096, ),
            generator=torch.Generator().manual_seed(0),
            dtype=torch.uint8).numpy().tobytes(),
        'empty':
        b'',
    }
    paths = {}
    for name, content in damaged.items():
        paths[name] = tmp_path / (name.replace(' ', '_') + '.pth')
        paths[name].write_bytes(content)
    return good, paths


def test_corrupt_checkpoints_are_reported_as_corrupt(tmp_path):
    good, damaged = _damaged_copies(tmp_path)
    assert set(load_checkpoint_file(str(good))) == {'state_dict'}
    for name, path in damaged.items():
        with pytest.raises(CorruptCheckpointError) as error:
            load_checkpoint_file(str(path))
        message = str(error.value)
        assert 'is corrupt or truncated' in message, name
        assert 'earlier checkpoint' in message, name
        assert 'weights_only' not in message, name
        assert not isinstance(error.value, UnsafeCheckpointError), name


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='can not be found'):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))


def test_mmcls_style_checkpoint_with_numpy_meta(tmp_path):
    path = tmp_path / 'mmcls.pth'
    torch.save(
        {
            'meta': {
                'mmcls_version': '0.12.0',
                'CLASSES': ('cat', 'dog'),
                'epoch': np.int64(130),
                'hist': np.arange(3.0)
            },
            'state_dict': {
                'backbone.stem.0.conv.weight': torch.randn(32, 3, 3, 3)
            }
        }, path)
    data = load_checkpoint_file(str(path))
    assert data['meta']['epoch'] == 130
    np.testing.assert_array_equal(data['meta']['hist'], np.arange(3.0))


def test_a_sound_file_torch_cannot_read_is_not_called_corrupt(
        tmp_path, monkeypatch):
    """Checksums match and the pickle parses, yet torch fails (a torch or
    numpy that reads it otherwise): the message says the file looks sound."""
    good, _ = _damaged_copies(tmp_path)

    def failing_load(*args, **kwargs):
        raise AttributeError("'tuple' object has no attribute '__module__'")

    monkeypatch.setattr(torch, 'load', failing_load)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(str(good))
    assert not isinstance(error.value, CorruptCheckpointError)
    assert 'the file looks sound' in str(error.value)
    assert str(good) in str(error.value)
