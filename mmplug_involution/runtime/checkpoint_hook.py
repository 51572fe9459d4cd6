"""Checkpoints that are never lost, and a resume that finds them.

mmengine's ``CheckpointHook`` removes the oldest kept checkpoint *before*
writing the new one (with ``max_keep_ckpts=1`` a kill during the write
leaves nothing), and writes ``last_checkpoint`` with a plain ``open``; its
auto-resume trusts ``last_checkpoint`` alone. :class:`SafeCheckpointHook`
(which ``build_runner`` puts in place of ``CheckpointHook``) writes the new
checkpoint (atomically, through the atomic local backend), then
``last_checkpoint`` (atomically), and only then removes old checkpoints; it
removes temporary files that killed writes left behind.
:func:`find_resumable_checkpoint` (mmengine's ``find_latest_checkpoint`` once
the package is imported) resumes from the newest complete checkpoint, also
when ``last_checkpoint`` is missing, names a missing file or an older one,
and says which it took.
"""
import glob
import os
import os.path as osp
import re
from typing import List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import runner as mmengine_runner

from .atomic_save import atomic_write
from .checkpoint import CorruptCheckpointError, _verify_archive

__all__ = [
    'SafeCheckpointHook', 'find_resumable_checkpoint',
    'register_resumable_checkpoint_finder', 'remove_stale_temp_files'
]

LAST_CHECKPOINT = 'last_checkpoint'
_NUMBERED = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def remove_stale_temp_files(folder: str) -> List[str]:
    """Removes the temporary files of killed atomic writes in ``folder``."""
    removed = []
    for path in glob.glob(osp.join(folder, '.*.tmp')):
        if osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def _complete(path: str) -> bool:
    try:
        return osp.isfile(path) and _verify_archive(path)
    except CorruptCheckpointError:
        return False


def _step(path: str) -> int:
    found = _NUMBERED.match(osp.basename(path))
    return int(found.group(1)) if found else -1


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint an auto ``--resume`` of ``work_dir`` continues from.

    ``last_checkpoint``'s file when it is complete and no numbered checkpoint
    (``iter_N.pth``/``epoch_N.pth``) beside it is newer; otherwise the newest
    complete numbered checkpoint in ``work_dir`` and in the folder
    ``last_checkpoint`` points to. Complete: a zip checkpoint whose CRC-32s
    all match. None when there is none.
    """
    named = None
    record = osp.join(work_dir, LAST_CHECKPOINT)
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip() or None
    folders = {work_dir} | ({osp.dirname(named)} if named else set())
    candidates = sorted(
        (path for folder in folders
         for path in glob.glob(osp.join(folder, '*.pth'))
         if _NUMBERED.match(osp.basename(path))),
        key=_step, reverse=True)
    if named and _complete(named) and all(
            _step(path) <= _step(named) for path in candidates):
        return named
    chosen = next((path for path in candidates if _complete(path)), None)
    if chosen is not None or named is not None:
        print_log(
            f'{record} ' + ('is missing' if named is None else
                            f'names {named}, which is missing, incomplete or '
                            'not the newest') +
            (f'; resuming from the newest complete checkpoint {chosen}.'
             if chosen else '; no complete checkpoint to resume from.'),
            logger='current')
    return chosen


def register_resumable_checkpoint_finder() -> None:
    """Make :func:`find_resumable_checkpoint` what mmengine's runner calls
    for an auto resume."""
    mmengine_runner.find_latest_checkpoint = find_resumable_checkpoint


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that never loses a checkpoint.

    Same arguments. The order of a save is: the new checkpoint (complete on
    disk, or not there at all), ``last_checkpoint`` (atomically), then the
    removal of checkpoints beyond ``max_keep_ckpts``. Before training, the
    temporary files of killed writes are removed.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process():
            for folder in {runner.work_dir, self.out_dir}:
                for path in remove_stale_temp_files(folder):
                    runner.logger.info(
                        f'Removed {path}, left by an interrupted write.')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        atomic_write(
            osp.join(runner.work_dir, LAST_CHECKPOINT),
            str(self.last_ckpt).encode())
        for old in outdated:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed's are folders
                self.file_backend.rmtree(path)
