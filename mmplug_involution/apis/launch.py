"""What tools/train.py and tools/test.py share: arguments, config, launch.

The launch adapts a config to the machine it runs on:

* CPU multi-process runs (``--launcher pytorch`` under torchrun without a
  GPU): mmengine's own initialisation calls ``torch.cuda.set_device`` and
  fails, so the gloo process group is initialised here first, and the model
  is wrapped in ``MMDistributedDataParallel(device_ids=None,
  broadcast_buffers=False)``. With GPUs nothing changes: mmengine uses NCCL.
* SyncBN cannot run without CUDA: on a CPU-only machine every ``SyncBN`` in
  the model config becomes ``BN``, with a message saying so. (In a single
  process mmengine already reverts SyncBN layers to BN itself.)
"""
import argparse
import logging
import os
import os.path as osp
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import MODELS, RUNNERS, DefaultScope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_to_model)
from torch import nn

import mmplug_involution.runtime  # noqa: F401 (registers the runner)

__all__ = [
    'add_tool_arguments', 'build_config_model', 'build_runner',
    'checkpoint_state_dict', 'finish_launch', 'load_config_checkpoint',
    'iter_config_dicts', 'launch', 'load_tool_config', 'prepare_launch',
    'replace_sync_bn'
]

TOOLKITS = ('mmdet', 'mmseg', 'mmpretrain')
_own_process_group = False


def iter_config_dicts(cfg: Any) -> Iterator[dict]:
    """Every dict in a nested config (dicts, lists, tuples), parents first.

    A dict is yielded before its values are visited, so the caller may
    change it (even add keys) and the walk sees the change.
    """
    if isinstance(cfg, dict):  # ConfigDict included
        yield cfg
        for value in list(cfg.values()):
            yield from iter_config_dicts(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            yield from iter_config_dicts(value)


def replace_sync_bn(cfg: Any) -> int:
    """Turn every ``type='SyncBN'`` in a (nested) config into ``'BN'``.

    Returns how many were replaced.
    """
    count = 0
    for node in iter_config_dicts(cfg):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
    return count


def prepare_launch(cfg: Config, launcher: str) -> None:
    """Adapt ``cfg`` in place for CPU-only and multi-process runs."""
    if torch.cuda.is_available():
        return
    replaced = replace_sync_bn(cfg.get('model', {}))
    if replaced:
        print_log(
            f'SyncBN needs CUDA: the {replaced} SyncBN setting(s) of this '
            'config use BN on this CPU-only machine (statistics are then '
            'per process).',
            logger='current',
            level=logging.WARNING)
    if launcher == 'none':
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs GPUs; on CPU use '
                         '--launcher pytorch under torchrun (gloo).')
    if not dist.is_initialized():
        missing = [
            v for v in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR')
            if v not in os.environ
        ]
        if missing:
            raise RuntimeError(
                f'--launcher pytorch expects torchrun; {missing} are not set. '
                'Use tools/dist_train.sh CONFIG NPROC.')
        dist.init_process_group('gloo')
        global _own_process_group
        _own_process_group = True
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel',
        device_ids=None,
        broadcast_buffers=False)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'


def finish_launch(succeeded: bool = True) -> None:
    """Tear down the gloo process group :func:`prepare_launch` created.

    After a successful run all processes first meet at a barrier, so none
    destroys its group (or exits) while a peer still uses it; left to
    interpreter shutdown, gloo's threads can abort a finished process
    ("terminate called without an active exception").
    """
    global _own_process_group
    if _own_process_group and dist.is_initialized():
        if succeeded:
            dist.barrier()
        dist.destroy_process_group()
    _own_process_group = False


def launch(cfg: Config, launcher: str, job: Callable[[], Any]) -> Any:
    """:func:`prepare_launch`, ``job()``, then :func:`finish_launch`."""
    prepare_launch(cfg, launcher)
    try:
        result = job()
    except BaseException:
        finish_launch(succeeded=False)
        raise
    finish_launch()
    return result


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank``."""
    parser.add_argument(
        '--work-dir', help='the dir for logs, checkpoints '
        'and results')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. train_cfg.max_iters=100')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_tool_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the :func:`add_tool_arguments`.

    The toolkit is the config's ``default_scope`` (one of ``TOOLKITS``).
    Applies ``--cfg-options`` and ``--launcher``; the work dir is
    ``--work-dir``, else the config's, else ``./work_dirs/<config>``.
    """
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    scope = cfg.get('default_scope')
    if scope not in TOOLKITS:
        raise ValueError(
            f'{args.config} has default_scope={scope!r}; the tools run '
            f'{" and ".join(TOOLKITS)} configs, which choose their toolkit '
            'there: inherit an mmdet::, mmseg:: or mmpretrain:: base '
            'config, or set default_scope to one of them.')
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_config_model(cfg: Config) -> nn.Module:
    """``cfg.model`` built in the config's toolkit scope, in eval mode.

    A top-level ``data_preprocessor`` (where mmpretrain's dataset bases put
    the normalisation and class count) goes to a model without its own, as
    mmengine's Runner does.
    """
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(model_cfg)
    model.eval()  # mmdet's ResNet.train returns None: no chaining
    return model


def checkpoint_state_dict(loaded: Any, checkpoint: str) -> dict:
    """The state dict in ``loaded`` (what ``checkpoint`` held): its
    ``state_dict`` entry, or itself.

    Raises:
        ValueError: it holds none (no dict of names).
    """
    state = loaded.get('state_dict', loaded) if isinstance(loaded,
                                                           dict) else None
    if not isinstance(state, dict) or not all(
            isinstance(key, str) for key in state):
        raise ValueError(f'{checkpoint} holds no state dict (it holds a '
                         f'{type(loaded).__name__}); give a checkpoint that '
                         'torch.save wrote from a model or its state_dict.')
    return state


def load_config_checkpoint(model: nn.Module, checkpoint: str,
                           config: str) -> dict:
    """Load ``checkpoint`` into ``model`` (built from ``config``) strictly,
    on CPU; returns the checkpoint.

    Raises:
        CheckpointError: the file can not be loaded (corrupt, unsafe or
            unreadable), with the loader's message.
        ValueError: it holds no state dict, or its keys or shapes do not fit
            the model (a checkpoint of another model), with mmengine's list
            of them.
    """
    loaded = _load_checkpoint(checkpoint, map_location='cpu')
    checkpoint_state_dict(loaded, checkpoint)
    try:
        _load_checkpoint_to_model(model, loaded, strict=True)
    except RuntimeError as error:
        raise ValueError(f'{checkpoint} does not fit the model of {config}: '
                         f'{error}') from error
    return loaded


def build_runner(cfg: Config) -> Runner:
    """The runner the config asks for (``runner_type``), else
    :class:`~mmplug_involution.runtime.SafeCheckpointRunner` (mmengine's
    ``Runner`` whose checkpoints are never lost)."""
    cfg.setdefault('runner_type', 'SafeCheckpointRunner')
    return RUNNERS.build(cfg)
