"""SafeCheckpointHook and the auto-resume finder: a checkpoint is never lost,
whatever point of a save a run is killed at."""
import pytest
import torch

from mmplug_involution.runtime import (SafeCheckpointHook,
                                       SafeCheckpointRunner, atomic_save,
                                       find_resumable_checkpoint)
from .test_checkpoint import _TinyData, _TinyModel


class _Killed(BaseException):
    """Stands for a kill: nothing after it runs."""


def _runner(work_dir,
            max_iters,
            resume=False,
            keep=1,
            load_from=None,
            model_class=_TinyModel):
    torch.manual_seed(0)  # the model is built before the Runner seeds
    return SafeCheckpointRunner(
        model=model_class(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_TinyData(),
            batch_size=2,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(
                type='SafeCheckpointHook',
                interval=1,
                by_epoch=False,
                max_keep_ckpts=keep)),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0))


def _kill_when(monkeypatch, target):
    """Kill the run when it writes a file whose name ends with ``target``."""
    original = atomic_save.atomic_write

    def write(filepath, data):
        if str(filepath).endswith(target):
            raise _Killed(filepath)
        original(filepath, data)

    monkeypatch.setattr(atomic_save, 'atomic_write', write)
    monkeypatch.setattr(
        'mmplug_involution.runtime.checkpoint_hook.'
        'atomic_write', write)


def _iter_of(path):
    return torch.load(
        path, map_location='cpu', weights_only=False)['meta']['iter']


def test_a_kill_while_writing_a_checkpoint_keeps_the_previous_one(
        tmp_path, monkeypatch):
    work = tmp_path / 'work'
    _runner(work, 2).train()
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    _kill_when(monkeypatch, 'iter_3.pth')
    with pytest.raises(_Killed):
        _runner(work, 3, resume=True).train()
    # max_keep_ckpts=1, and the previous checkpoint is still there
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text().endswith('iter_2.pth')
    monkeypatch.undo()
    leftover = work / '.iter_3.pth.x1y2.tmp'  # what a SIGKILL leaves
    leftover.write_bytes(b'partial')
    _runner(work, 3, resume=True).train()
    assert not leftover.exists()
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_3.pth']
    assert _iter_of(work / 'iter_3.pth') == 3


def test_a_kill_before_last_checkpoint_is_written_resumes_the_new_one(
        tmp_path, monkeypatch):
    work = tmp_path / 'work'
    _runner(work, 2).train()
    _kill_when(monkeypatch, 'last_checkpoint')
    with pytest.raises(_Killed):
        _runner(work, 3, resume=True).train()
    # the new checkpoint is complete, the old one not yet removed, and
    # last_checkpoint is stale: the finder takes the newest complete one
    assert sorted(p.name
                  for p in work.glob('*.pth')) == ['iter_2.pth', 'iter_3.pth']
    assert (work / 'last_checkpoint').read_text().endswith('iter_2.pth')
    assert find_resumable_checkpoint(str(work)).endswith('iter_3.pth')


def test_the_finder_takes_the_newest_complete_checkpoint(tmp_path):
    work = tmp_path / 'work'
    _runner(work, 3, keep=-1).train()
    record = work / 'last_checkpoint'
    assert find_resumable_checkpoint(str(work)) == record.read_text()
    record.unlink()  # missing
    assert find_resumable_checkpoint(str(work)).endswith('iter_3.pth')
    record.write_text(str(work / 'iter_9.pth'))  # names a missing file
    assert find_resumable_checkpoint(str(work)).endswith('iter_3.pth')
    data = (work / 'iter_3.pth').read_bytes()  # the newest one truncated
    (work / 'iter_3.pth').write_bytes(data[:len(data) // 2])
    assert find_resumable_checkpoint(str(work)).endswith('iter_2.pth')
    for path in work.glob('*.pth'):
        path.unlink()
    assert find_resumable_checkpoint(str(work)) is None


class _DropoutModel(_TinyModel):
    """Draws random numbers every step (as anchor/RoI samplers do)."""

    def forward(self, x, y, mode='loss'):
        out = self.linear(torch.nn.functional.dropout(x, 0.5, self.training))
        if mode == 'loss':
            return dict(loss=((out - y)**2).mean())
        return out


def test_a_resumed_run_continues_bitwise_as_the_straight_one(
        tmp_path, monkeypatch):
    monkeypatch.setattr(__name__ + '._TinyModel', _DropoutModel)
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    _runner(straight, 5, keep=-1).train()
    _runner(resumed, 2, keep=-1).train()  # "killed" after iteration 2
    _runner(resumed, 5, resume=True, keep=-1).train()
    a = torch.load(straight / 'iter_5.pth', weights_only=False)
    b = torch.load(resumed / 'iter_5.pth', weights_only=False)
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    assert a['random_states'][0]['torch'].equal(b['random_states'][0]['torch'])


def test_load_from_without_resume_starts_fresh_random_numbers(
        tmp_path, monkeypatch):
    """``load_from`` alone takes the weights, not the random states or the
    position: the run draws as a fresh run from iteration 0 does."""
    monkeypatch.setattr(__name__ + '._TinyModel', _DropoutModel)
    _runner(tmp_path / 'first', 3, keep=-1).train()
    fresh = _runner(tmp_path / 'fresh', 2, keep=-1)
    fresh.train()
    loaded = _runner(
        tmp_path / 'loaded',
        2,
        keep=-1,
        load_from=str(tmp_path / 'first' / 'iter_3.pth'))
    loaded.train()
    a, b = (
        torch.load(tmp_path / run / 'iter_2.pth', weights_only=False)
        for run in ('fresh', 'loaded'))
    assert a['random_states'][0]['torch'].equal(b['random_states'][0]['torch'])
    assert b['meta']['iter'] == 2


def test_the_runner_swaps_in_the_safe_hook_and_resumes_the_newest(
        tmp_path, monkeypatch):
    work = tmp_path / 'work'
    _runner(work, 2).train()
    _kill_when(monkeypatch, 'last_checkpoint')
    with pytest.raises(_Killed):
        _runner(work, 3, resume=True).train()
    monkeypatch.undo()
    runner = _runner(work, 4, resume=True)
    stock = SafeCheckpointRunner(
        model=_TinyModel(),
        work_dir=str(tmp_path / 'stock'),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2)))
    assert [type(h) for h in stock.hooks
            if 'Checkpoint' in type(h).__name__] == [SafeCheckpointHook]
    # last_checkpoint names iter_2; the run continues from iter_3
    runner.train()
    assert _iter_of(work / 'iter_4.pth') == 4
    assert runner._load_from.endswith('iter_3.pth')
