"""What makes the stock OpenMMLab tools work on current torch and on CPU."""
from .atomic_save import (AtomicLocalBackend, atomic_write,
                          register_atomic_local_backend)
from .checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                         load_checkpoint_file,
                         register_safe_checkpoint_globals,
                         safe_checkpoint_globals)
from .checkpoint_hook import (SafeCheckpointHook, find_resumable_checkpoint,
                              register_resumable_checkpoint_finder,
                              remove_stale_temp_files)
from .child_processes import kill_forked_children_with_parent
from .complexity import (involution_flop_jit, model_complexity,
                         register_complexity_handles)
from .launch import (add_tool_arguments, build_config_model, build_runner,
                     finish_launch, iter_config_dicts, launch,
                     load_config_checkpoint, load_tool_config, prepare_launch,
                     replace_sync_bn)
from .onnx_export import TensorOutputs, compare_with_onnxruntime, export_onnx
from .work_dir import earlier_run_checkpoints, prepare_work_dir

__all__ = [
    'AtomicLocalBackend', 'atomic_write', 'register_atomic_local_backend',
    'add_tool_arguments', 'build_runner', 'finish_launch',
    'iter_config_dicts', 'launch',
    'load_tool_config', 'prepare_launch', 'replace_sync_bn',
    'involution_flop_jit', 'model_complexity', 'register_complexity_handles',
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'load_checkpoint_file',
    'register_safe_checkpoint_globals', 'safe_checkpoint_globals',
    'earlier_run_checkpoints', 'prepare_work_dir',
    'kill_forked_children_with_parent', 'SafeCheckpointHook',
    'find_resumable_checkpoint', 'register_resumable_checkpoint_finder',
    'remove_stale_temp_files', 'TensorOutputs', 'build_config_model',
    'load_config_checkpoint', 'compare_with_onnxruntime', 'export_onnx'
]
