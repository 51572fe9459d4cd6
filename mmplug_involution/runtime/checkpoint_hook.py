"""Checkpoints that are never lost, and a resume that finds them.

mmengine's ``CheckpointHook`` removes the oldest kept checkpoint *before*
writing the new one (with ``max_keep_ckpts=1`` a kill during the write
leaves nothing), and writes ``last_checkpoint`` with a plain ``open``; its
auto-resume trusts ``last_checkpoint`` alone. :class:`SafeCheckpointHook`
(which :class:`~.runner.SafeCheckpointRunner` puts in place of
``CheckpointHook``) writes the new checkpoint (atomically, through the
``atomic_local`` file backend), then
``last_checkpoint`` (atomically), and only then removes old checkpoints; it
removes temporary files that killed writes left behind.
:func:`find_resumable_checkpoint` (what
:class:`~.runner.SafeCheckpointRunner` resumes from) finds the newest
complete checkpoint, also when ``last_checkpoint`` is missing, names a
missing file or an older one, and says which it took.
"""
import glob
import os
import os.path as osp
import random
import re
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .atomic_save import ATOMIC_LOCAL_BACKEND, atomic_write
from .checkpoint import CorruptCheckpointError, verify_checkpoint_archive

__all__ = [
    'LAST_CHECKPOINT', 'SafeCheckpointHook', 'find_resumable_checkpoint',
    'remove_stale_temp_files'
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
        return osp.isfile(path) and verify_checkpoint_archive(path)
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
    candidates = sorted((path for folder in folders
                         for path in glob.glob(osp.join(folder, '*.pth'))
                         if _NUMBERED.match(osp.basename(path))),
                        key=_step,
                        reverse=True)
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


def _random_states() -> dict:
    states = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class _RandomNeutralSkip:
    """A data-loader iterator whose first ``count`` batches (the ones a
    resumed loop loads to skip them) leave the random states unchanged."""

    def __init__(self, iterator, count: int) -> None:
        self._iterator, self._count = iterator, count

    def __iter__(self):
        return self

    def __next__(self):
        if self._count <= 0:
            return next(self._iterator)
        self._count -= 1
        states = _random_states()
        try:
            return next(self._iterator)
        finally:
            _set_random_states(states)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that never loses a checkpoint.

    Same arguments. The order of a save is: the new checkpoint (complete on
    disk, or not there at all: written through the ``atomic_local`` file
    backend unless ``backend_args``/``file_client_args`` name another),
    ``last_checkpoint`` (atomically), then the removal of checkpoints beyond
    ``max_keep_ckpts``. Before training, the temporary files of killed
    writes are removed.

    Every checkpoint also carries each rank's random states (Python, numpy,
    torch: ``random_states``); a resumed run sets them again, and the data
    batches an iteration-based loop loads again to skip the done iterations
    are loaded without drawing from them. So the resumed run draws the same
    random numbers (augmentation, anchor and RoI sampling, dropout) as the
    uninterrupted run would.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        local = self.out_dir is None or '://' not in str(self.out_dir)
        if local and self.backend_args is None and (self.file_client_args
                                                    is None):
            self.backend_args = dict(backend=ATOMIC_LOCAL_BACKEND)

    def _save_checkpoint(self, runner) -> None:
        # Every rank runs this; ``runner.save_checkpoint`` (and so
        # ``before_save_checkpoint``) runs on rank 0 only, where a collective
        # would wait for the other ranks forever.
        self._gathered_states = all_gather_object(_random_states())
        try:
            super()._save_checkpoint(runner)
        finally:
            self._gathered_states = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = getattr(self, '_gathered_states', None)
        if states is None and runner.world_size == 1:  # e.g. a best ckpt
            states = [_random_states()]
        if states is not None:
            checkpoint['random_states'] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume:  # ``load_from`` only: weights, a fresh start
            return
        states = checkpoint.get('random_states')
        if states is None:
            runner.logger.warning(
                'The checkpoint holds no random states (written by another '
                'hook, or a best checkpoint of a multi-process run): the '
                'resumed run draws other random numbers than the interrupted '
                'one would have.')
            return
        if len(states) != runner.world_size:
            runner.logger.warning(
                f'The checkpoint holds the random states of {len(states)} '
                f'processes, this run has {runner.world_size}: the resumed '
                'run draws other random numbers than the interrupted one.')
            return
        _set_random_states(states[get_rank()])
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop
            loop.dataloader_iterator = _RandomNeutralSkip(
                loop.dataloader_iterator, checkpoint['meta'].get('iter', 0))

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
