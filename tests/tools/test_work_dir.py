"""A new run never mixes into an earlier run's work dir."""
import pytest

from mmplug_involution.apis import work_dir as work_dir_module

earlier_run_checkpoints = work_dir_module.earlier_run_checkpoints
prepare_work_dir = work_dir_module.prepare_work_dir


def _earlier_run(work):
    work.mkdir()
    (work / 'iter_2.pth').write_bytes(b'checkpoint 2')
    (work / 'iter_4.pth').write_bytes(b'checkpoint 4')
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    (work / '20261201_120000').mkdir()  # a log dir: not a checkpoint
    return {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}


def test_new_work_dirs_and_log_only_dirs_are_accepted(tmp_path):
    prepare_work_dir(str(tmp_path / 'new'), resume=False, start_over=False)
    (tmp_path / 'logs' / '20261201_120000').mkdir(parents=True)
    prepare_work_dir(str(tmp_path / 'logs'), resume=False, start_over=False)


def test_an_earlier_run_is_refused_without_resume(tmp_path):
    work = tmp_path / 'work'
    before = _earlier_run(work)
    assert earlier_run_checkpoints(
        str(work)) == ['iter_2.pth', 'iter_4.pth', 'last_checkpoint']
    with pytest.raises(FileExistsError) as error:
        prepare_work_dir(str(work), resume=False, start_over=False)
    message = str(error.value)
    for hint in ('earlier run', 'iter_2.pth', '--resume', '--work-dir',
                 '--start-over', 'not deleted'):
        assert hint in message
    # nothing was touched; resuming (or another rank of a start-over) passes
    assert {
        p.name: p.read_bytes()
        for p in work.iterdir() if p.is_file()
    } == before
    prepare_work_dir(str(work), resume=True, start_over=False)
    prepare_work_dir(str(work), resume=False, start_over=True, rank=1)
    assert earlier_run_checkpoints(str(work)) == sorted(before)


def test_start_over_moves_the_earlier_run_aside(tmp_path):
    work = tmp_path / 'work'
    before = _earlier_run(work)
    prepare_work_dir(str(work), resume=False, start_over=True)
    assert earlier_run_checkpoints(str(work)) == []
    assert (work / '20261201_120000').is_dir()
    aside, = work.glob('previous_run_*')
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before
    # a second start-over in the same second gets its own folder
    (work / 'iter_6.pth').write_bytes(b'checkpoint 6')
    prepare_work_dir(str(work), resume=False, start_over=True)
    assert len(list(work.glob('previous_run_*'))) == 2
