"""mmengine's ``Runner`` with checkpoints that are never lost.

A config selects it with ``runner_type = 'SafeCheckpointRunner'`` (the
project's ``configs/_base_/plugin.py`` does); the toolkits' own
``tools/train.py`` build ``RUNNERS.build(cfg)`` when a config names a
``runner_type``. Same arguments as ``Runner``. Two differences:

* a ``CheckpointHook`` in ``default_hooks`` (or mmengine's default one)
  becomes :class:`~.checkpoint_hook.SafeCheckpointHook`, with the same
  arguments;
* an auto resume (``resume=True`` without ``load_from``, the tools'
  ``--resume``) continues from
  :func:`~.checkpoint_hook.find_resumable_checkpoint`: the newest complete
  checkpoint, not whatever ``last_checkpoint`` names.
"""
from typing import Dict, Optional, Union

from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint_hook import SafeCheckpointHook, find_resumable_checkpoint

__all__ = ['SafeCheckpointRunner']

_STOCK_CHECKPOINT_HOOK = dict(type='CheckpointHook', interval=1)


@RUNNERS.register_module()
class SafeCheckpointRunner(Runner):
    """``Runner`` whose checkpoint hook and auto resume never lose a
    checkpoint (see the module docstring)."""

    def register_default_hooks(
            self,
            hooks: Optional[Dict[str, Union[Hook, Dict]]] = None) -> None:
        hooks = dict(hooks or {})
        checkpoint = hooks.get('checkpoint', _STOCK_CHECKPOINT_HOOK)
        if isinstance(checkpoint,
                      dict) and checkpoint.get('type') in ('CheckpointHook',
                                                           CheckpointHook):
            hooks['checkpoint'] = dict(checkpoint, type=SafeCheckpointHook)
        super().register_default_hooks(hooks)

    def load_or_resume(self) -> None:
        if self._resume and self._load_from is None and not self._has_loaded:
            self._load_from = find_resumable_checkpoint(self.work_dir)
            if self._load_from is None:
                self.logger.info(
                    f'No complete checkpoint in {self.work_dir} to resume '
                    'from: training starts from the beginning.')
                return
            self.logger.info(f'Auto resumes from {self._load_from}.')
        super().load_or_resume()
