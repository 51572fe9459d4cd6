"""Evaluate a checkpoint with an mmdet/mmseg/mmpretrain config (COCO AP,
mIoU, top-1 accuracy, ...).

Example:
    python tools/test.py CONFIG CHECKPOINT [--show-dir DIR] [--work-dir DIR]
        [--fuse-conv-bn]
``--show-dir DIR`` writes every test image with its predictions drawn under
the work dir's timestamped folder: boxes and masks for detectors in
``<timestamp>/DIR/``, the coloured ground truth beside the coloured
prediction for segmentors in ``<timestamp>/vis_data/DIR/``, the true and
the predicted class (with its score) for classifiers in ``<timestamp>/DIR/``
(``<image file name>_0.png``).
"""
import argparse
import os.path as osp

from mmengine.dist import is_main_process
from rich.console import Console
from rich.table import Table

from mmplug_involution.apis import (add_tool_arguments, build_runner,
                                    kill_forked_children_with_parent, launch,
                                    load_tool_config)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a '
                                     'model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--show-dir',
        help='directory (inside the work dir\'s timestamped folder) where '
        'images with predictions are written')
    parser.add_argument(
        '--show', action='store_true', help='show predictions in a window')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='fold each BN into the conv before it (FuseConvBNHook): same '
        'results up to rounding, faster inference')
    add_tool_arguments(parser)
    return parser.parse_args()


def enable_visualization(cfg, args):
    """Turn on the toolkit's visualization hook for --show/--show-dir."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need a `visualization` hook in '
                         'default_hooks (the mmdet/mmseg/mmpretrain bases '
                         'have one).')
    if cfg.get('default_scope') == 'mmpretrain':
        # its VisualizationHook: `enable`, not `draw`; every test image;
        # `out_dir` is set on the built runner (see show_dir_in_log_dir)
        hook['enable'] = True
        hook['interval'] = 1
        if args.show:
            hook['show'] = True
            hook['wait_time'] = args.wait_time
        return
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if hook['type'].endswith('SegVisualizationHook'):
        hook['interval'] = 1  # every test image, as for detectors
        if args.show_dir:  # images go to <log dir>/vis_data/<show_dir>/
            local = [
                b for b in cfg.visualizer.get('vis_backends', [])
                if b['type'].endswith('LocalVisBackend')
            ]
            if not local:
                raise ValueError('--show-dir needs a LocalVisBackend in '
                                 'visualizer.vis_backends (the mmseg '
                                 'bases have one).')
            for backend in local:
                backend['img_save_dir'] = args.show_dir
    elif args.show_dir:  # mmdet: <log dir>/<show_dir>/
        hook['test_out_dir'] = args.show_dir


def show_dir_in_log_dir(runner, show_dir):
    """Point mmpretrain's VisualizationHook at ``<log dir>/<show_dir>/``
    (the runner's timestamped folder, as mmdet's hook does itself; the
    hook takes its ``out_dir`` as given)."""
    hooks = [
        hook for hook in runner.hooks
        if type(hook).__name__ == 'VisualizationHook'
        and hasattr(hook, 'out_dir')
    ]
    if not hooks:
        raise ValueError('--show-dir needs mmpretrain\'s VisualizationHook '
                         'in default_hooks.visualization (the mmpretrain '
                         'bases have one).')
    for hook in hooks:
        hook.out_dir = osp.join(runner.log_dir, show_dir)


def run_test(cfg, args):
    """Build the runner and test; return the metrics."""
    runner = build_runner(cfg)
    if args.show_dir and cfg.get('default_scope') == 'mmpretrain':
        show_dir_in_log_dir(runner, args.show_dir)
    return runner.test()


def main():
    args = parse_args()
    kill_forked_children_with_parent()  # data-loader workers
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} not found.')
    cfg = load_tool_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.fuse_conv_bn:
        cfg.custom_hooks = [
            *cfg.get('custom_hooks', []),
            dict(type='FuseConvBNHook')
        ]
    metrics = launch(cfg, args.launcher, lambda: run_test(cfg, args))
    if is_main_process():
        print_metrics(
            metrics, f'{osp.basename(args.config)}, '
            f'{osp.basename(args.checkpoint)}')


def print_metrics(metrics: dict, title: str) -> None:
    """Print the evaluation metrics as a table."""
    console = Console()
    console.print(title)
    table = Table()
    table.add_column('metric')
    table.add_column('value', justify='right')
    for name, value in metrics.items():
        text = f'{value:.4f}' if isinstance(value, float) else str(value)
        table.add_row(name, text)
    console.print(table)


if __name__ == '__main__':
    main()
