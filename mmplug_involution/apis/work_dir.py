"""Keeping one run per work dir: a new run never mixes into an earlier one's
checkpoints."""
import os
import os.path as osp
import tempfile
import time
from typing import List

from mmplug_involution.runtime.checkpoint_hook import LAST_CHECKPOINT

__all__ = ['earlier_run_checkpoints', 'prepare_work_dir']


def earlier_run_checkpoints(work_dir: str) -> List[str]:
    """The checkpoint files (``*.pth``) and ``last_checkpoint`` directly in
    ``work_dir``, sorted; empty when there is no such directory."""
    if not osp.isdir(work_dir):
        return []
    return sorted(
        name for name in os.listdir(work_dir)
        if (name.endswith('.pth') or name == LAST_CHECKPOINT)
        and osp.isfile(osp.join(work_dir, name)))


def prepare_work_dir(work_dir: str,
                     resume: bool,
                     start_over: bool,
                     rank: int = 0) -> None:
    """Refuse a new run into a work dir that holds an earlier run.

    Args:
        work_dir: the run's work dir.
        resume: the run continues the earlier one (``--resume``): allowed.
        start_over: move the earlier run's checkpoints aside into
            ``work_dir/previous_run_<YYYYmmdd_HHMMSS>_<random>/`` (nothing is
            deleted); only rank 0 moves, the other ranks skip the check.
        rank: this process's rank.

    Raises:
        FileExistsError: the work dir holds checkpoints and neither
            ``resume`` nor ``start_over`` is set; the message says what to do.
    """
    if resume or (start_over and rank != 0):
        return
    found = earlier_run_checkpoints(work_dir)
    if not found:
        return
    if not start_over:
        shown = ', '.join(found[:4]) + (', ...' if len(found) > 4 else '')
        raise FileExistsError(
            f'{work_dir} already holds the checkpoints of an earlier run '
            f'({shown}). Pass --resume to continue that run, choose another '
            '--work-dir, or pass --start-over to begin a new run there (the '
            'earlier checkpoints are moved to '
            f'{osp.join(work_dir, "previous_run_<time>")}/, not deleted).')
    aside = tempfile.mkdtemp(  # a new folder, even for two in one second
        prefix=f'previous_run_{time.strftime("%Y%m%d_%H%M%S")}_',
        dir=work_dir)
    for name in found:
        os.replace(osp.join(work_dir, name), osp.join(aside, name))
