"""Export a config's model to ONNX, check the file and run it in ONNX Runtime.

Detectors and segmentors export their tensor-mode forward (features and the
heads' raw outputs, before post-processing; for two-stage detectors the RPN
head's), backbones their features; see ``docs/deployment.md``. The file uses
standard ONNX operators only (opset 17 or later); with ``--custom-ops`` each
involution is one node of the custom domain ``mmplug_involution``, which
OpenVINO runs with the package's extension (the fast route there). After
writing it the tool runs the ONNX checker, then ONNX Runtime (OpenVINO in
float32 with ``--custom-ops``) on a random input (and, with ``--dynamic``,
on a second size and batch), and prints the largest difference to PyTorch;
it exits with status 1 when that exceeds ``--tolerance`` (relative to the
output's largest magnitude).

Example:
    python tools/deploy/export_onnx.py \\
        configs/rednet/retinanet_rednet50_fpn_1x_coco.py CHECKPOINT \\
        --out retinanet_rednet50.onnx --shape 800 1216 --dynamic
"""
import argparse
import importlib
import os
import os.path as osp
import sys
import tempfile
from typing import NoReturn

import torch
from mmengine.config import Config, DictAction

from mmplug_involution.apis import build_config_model, load_config_checkpoint
from mmplug_involution.deploy import (EXPORTERS, TensorOutputs,
                                      compare_with_onnxruntime,
                                      compare_with_openvino, export_onnx)
from mmplug_involution.runtime import CheckpointError


def parse_args():
    parser = argparse.ArgumentParser(
        description='Export a config\'s model to ONNX and compare ONNX '
        'Runtime\'s outputs with PyTorch\'s.')
    parser.add_argument('config', help='an mmdet or mmseg config')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='weights to export (default: the config\'s initialisation)')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=(512, 512),
        metavar=('H', 'W'),
        help='input height and width (default 512 512)')
    parser.add_argument(
        '--batch',
        type=int,
        default=1,
        help='batch size of the example input (default 1)')
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='dynamic batch, height and width (multiples of '
        '--size-divisor)')
    parser.add_argument(
        '--size-divisor',
        type=int,
        default=32,
        help='with --dynamic: heights and widths are multiples of this '
        '(default 32, the stride of the deepest FPN level); 1 for any size')
    parser.add_argument(
        '--exporter',
        choices=EXPORTERS,
        default='dynamo',
        help='torch.onnx exporter (default dynamo)')
    parser.add_argument(
        '--custom-ops',
        action='store_true',
        help='write each involution as one mmplug_involution node for '
        'OpenVINO with the package\'s extension (checked in OpenVINO) '
        'instead of standard ONNX operators (any runtime)')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-4,
        help='largest accepted relative difference')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace an existing --out file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    return parser.parse_args()


def fail(message: str) -> NoReturn:
    sys.exit(f'export_onnx: error: {message}')


def main():
    args = parse_args()
    if not osp.isfile(args.config):
        fail(f'config file {args.config} not found.')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        fail(f'checkpoint file {args.checkpoint} not found.')
    if osp.exists(args.out) and not args.overwrite:
        fail(f'{args.out} exists; pass --overwrite to replace it.')
    height, width = args.shape
    if min(height, width, args.batch) < 1:
        fail('--shape and --batch must be positive.')
    divisor = args.size_divisor if args.dynamic else 1
    if args.dynamic and (height % divisor or width % divisor):
        fail(f'--shape {height} {width} must be multiples of '
             f'--size-divisor {divisor} with --dynamic.')
    runtime = 'openvino' if args.custom_ops else 'onnxruntime'
    try:
        import onnx
        importlib.import_module(runtime)
    except ImportError as error:
        extra = 'openvino' if args.custom_ops else 'deploy'
        fail(f'{error.name} is missing: pip install '
             f'"mmplug-involution[{extra}]" (the README set-up installs '
             'it).')

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_config_model(cfg)
    if args.checkpoint:
        try:
            load_config_checkpoint(model, args.checkpoint, args.config)
        except (CheckpointError, ValueError) as error:
            fail(str(error))
        model.eval()
    module = TensorOutputs(model)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(args.batch, 3, height, width, generator=generator)

    folder = osp.dirname(osp.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    # written beside the target and renamed: a failed export leaves no
    # half-written file where the user expects a model
    handle, partial = tempfile.mkstemp(
        suffix='.onnx', dir=folder, prefix='.export_onnx.')
    os.close(handle)
    try:
        export_onnx(
            module,
            example,
            partial,
            dynamic=args.dynamic,
            exporter=args.exporter,
            size_divisor=divisor,
            custom_ops=args.custom_ops)
        onnx.checker.check_model(partial, full_check=True)
        os.replace(partial, args.out)
    except RuntimeError as error:
        if 'dynamo ONNX exporter needs' not in str(error):
            raise
        fail(str(error))
    finally:
        if osp.exists(partial):
            os.remove(partial)
    kind = 'custom-op' if args.custom_ops else 'standard-op'
    print(f'Wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB, '
          f'{args.exporter} exporter, {kind}); the ONNX checker passed.')

    batches = [example]
    if args.dynamic:
        step = max(divisor, 8)
        batches.append(
            torch.randn(
                args.batch + 1,
                3,
                height + step,
                width + 2 * step,
                generator=generator))
    worst = 0.
    if args.custom_ops:
        name = 'OpenVINO (f32)'
        try:
            results = compare_with_openvino(args.out, module, batches)
        except RuntimeError as error:
            fail(str(error))
    else:
        name = 'ONNX Runtime'
        results = compare_with_onnxruntime(args.out, module, batches)
    for result in results:
        print(f'{name} vs PyTorch, input {result["shape"]}: largest '
              f'difference {result["max_abs"]:.3g} '
              f'(relative {result["max_rel"]:.3g})')
        worst = max(worst, result['max_rel'])
    if worst > args.tolerance:
        fail(f'{name} differs from PyTorch by {worst:.3g} (relative), '
             f'more than --tolerance {args.tolerance:g}.')


if __name__ == '__main__':
    main()
