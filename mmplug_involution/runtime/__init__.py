"""What the stock OpenMMLab tools need on current torch: opt in by import.

``import mmplug_involution`` only registers the package's classes. Importing
``mmplug_involution.runtime`` (the second ``custom_imports`` entry of the
project's configs, ``configs/_base_/plugin.py``) changes, process-wide:

* torch: :func:`~.checkpoint.safe_checkpoint_globals` join torch's
  ``weights_only`` allow-list (``torch.serialization.add_safe_globals``):
  mmengine's ``HistoryBuffer``, numpy arrays, scalars and dtypes, and
  ``builtins.getattr`` as an alias of a function that only returns
  ``HistoryBuffer``'s statistic methods (what its pickled state names);
* mmengine's checkpoint loader for local paths
  (``CheckpointLoader.register_scheme(prefixes='', force=True)``):
  :func:`~.checkpoint.load_checkpoint_file`, ``weights_only=True`` with
  errors that say what to do, CRC-checked zip members;
* mmengine's file backends: ``atomic_local`` is added (``local`` is kept);
* mmengine's registries: the hook ``SafeCheckpointHook`` and the runner
  ``SafeCheckpointRunner``, which a config selects with
  ``runner_type='SafeCheckpointRunner'`` (atomic checkpoint writes, no
  checkpoint removed before its successor is complete, auto resume from the
  newest complete checkpoint, random states restored);
* mmengine's complexity analysis: its default op handles (a private table,
  the only way to reach the toolkits' ``get_flops`` tools) count the
  package's ops (:mod:`mmplug_involution.analysis`).
"""
from mmengine.analysis import complexity_analysis

from ..analysis import complexity_handles
from .atomic_save import (ATOMIC_LOCAL_BACKEND, AtomicLocalBackend,
                          atomic_write, register_atomic_local_backend)
from .checkpoint import (CheckpointError, CorruptCheckpointError,
                         UnsafeCheckpointError, load_checkpoint_file,
                         pickled_array_globals,
                         register_safe_checkpoint_loading,
                         safe_checkpoint_globals, verify_checkpoint_archive)
from .checkpoint_hook import (LAST_CHECKPOINT, SafeCheckpointHook,
                              find_resumable_checkpoint,
                              remove_stale_temp_files)
from .runner import SafeCheckpointRunner

__all__ = [
    'ATOMIC_LOCAL_BACKEND', 'AtomicLocalBackend', 'atomic_write',
    'register_atomic_local_backend', 'CheckpointError',
    'CorruptCheckpointError', 'UnsafeCheckpointError', 'load_checkpoint_file',
    'register_safe_checkpoint_loading', 'safe_checkpoint_globals',
    'pickled_array_globals', 'verify_checkpoint_archive', 'LAST_CHECKPOINT',
    'SafeCheckpointHook', 'find_resumable_checkpoint',
    'remove_stale_temp_files', 'SafeCheckpointRunner',
    'register_complexity_handles'
]


def register_complexity_handles() -> None:
    """Add :func:`~mmplug_involution.analysis.complexity_handles` to
    mmengine's default flop and activation handles."""
    handles = complexity_handles()
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.update(handles['flops'])
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS.update(
        handles['activations'])


register_safe_checkpoint_loading()
register_atomic_local_backend()
register_complexity_handles()
