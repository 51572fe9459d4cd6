"""Train a detector or segmentor from an mmdet/mmseg config.

The toolkit comes from the config (``default_scope``, set by the mmdet/mmseg
bases it inherits). Works on one process or many (``tools/dist_train.sh``):
NCCL on GPUs, gloo on CPU-only machines.

Example:
    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [PATH]]
        [--start-over]

A work dir that holds an earlier run's checkpoints is refused unless the run
resumes it (``--resume``) or ``--start-over`` moves them aside.
"""
import argparse
import os
import os.path as osp

from mmengine.logging import print_log

from mmplug_involution.apis import (add_tool_arguments, build_runner,
                                    kill_forked_children_with_parent, launch,
                                    load_tool_config, prepare_work_dir)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr with '
        'the total batch size (needs auto_scale_lr in the config)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from PATH, or from the latest checkpoint of the work '
        'dir when no PATH is given')
    parser.add_argument(
        '--start-over',
        action='store_true',
        help='start a new run in a work dir that holds an earlier run\'s '
        'checkpoints, moving them into WORK_DIR/previous_run_<time>_*/ '
        '(without it, such a work dir is refused)')
    add_tool_arguments(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    kill_forked_children_with_parent()  # data-loader workers
    cfg = load_tool_config(args)
    if args.amp:
        if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config.', 'current')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr='
                             'dict(enable=..., base_batch_size=...) in the '
                             'config.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: no such file.')
        cfg.resume = True
        cfg.load_from = args.resume
    prepare_work_dir(cfg.work_dir, args.resume is not None, args.start_over,
                     int(os.environ.get('RANK', 0)))
    launch(cfg, args.launcher, lambda: build_runner(cfg).train())


if __name__ == '__main__':
    main()
