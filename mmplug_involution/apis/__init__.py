"""What the command-line tools are built from: ``tools/train.py`` and
``tools/test.py`` (arguments, config, launch on one or many processes, the
work-dir guard, data-loader workers that die with their parent) and the
analysis, deployment and conversion tools (a config's model, a checkpoint
loaded into it; what the checkpoint converters share: the checks of their
paths and keys, the meta and the atomic write).

Importing it opts into :mod:`mmplug_involution.runtime` (safe checkpoint
loading, the safe-checkpoint runner), which the tools rely on; importing
``mmplug_involution`` alone does not import this.
"""
from .child_processes import kill_forked_children_with_parent
from .launch import (add_tool_arguments, build_config_model, build_runner,
                     checkpoint_state_dict, finish_launch, iter_config_dicts,
                     launch, load_config_checkpoint, load_tool_config,
                     prepare_launch, replace_sync_bn)
from .model_conversion import (ConversionError, KeyMismatches,
                               blocks_per_stage, check_output_path,
                               compare_keys, conversion_meta, converter_parser,
                               count_parameters, exit_with_error, file_sha256,
                               save_converted)
from .work_dir import earlier_run_checkpoints, prepare_work_dir

__all__ = [
    'add_tool_arguments', 'build_config_model', 'build_runner',
    'checkpoint_state_dict', 'finish_launch', 'iter_config_dicts', 'launch',
    'load_config_checkpoint', 'load_tool_config', 'prepare_launch',
    'replace_sync_bn', 'kill_forked_children_with_parent',
    'earlier_run_checkpoints', 'prepare_work_dir', 'ConversionError',
    'KeyMismatches', 'check_output_path', 'compare_keys', 'conversion_meta',
    'count_parameters', 'exit_with_error', 'file_sha256', 'save_converted',
    'converter_parser', 'blocks_per_stage'
]
