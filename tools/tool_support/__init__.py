"""What the scripts in ``tools/`` share, beside the package they run.

Not part of ``mmplug_involution``: the scripts opt into its runtime
(:mod:`mmplug_involution.runtime`) through :mod:`.launch`. A script directly
in ``tools/`` imports this folder as a sibling; a script in a sub-folder
first appends ``tools/`` to ``sys.path``.
"""
from .child_processes import kill_forked_children_with_parent
from .launch import (add_tool_arguments, build_config_model, build_runner,
                     finish_launch, iter_config_dicts, launch,
                     load_config_checkpoint, load_tool_config, prepare_launch,
                     replace_sync_bn)
from .work_dir import earlier_run_checkpoints, prepare_work_dir

__all__ = [
    'add_tool_arguments', 'build_config_model', 'build_runner',
    'finish_launch', 'iter_config_dicts', 'launch', 'load_config_checkpoint',
    'load_tool_config', 'prepare_launch', 'replace_sync_bn',
    'kill_forked_children_with_parent', 'earlier_run_checkpoints',
    'prepare_work_dir'
]
