"""Check that a checkpoint fits a config's model before training with it.

Loads the checkpoint (through the package's safe loader: corrupt and unsafe
files are reported as such), takes the keys under ``--prefix`` (``backbone.``
for an mmcls/mmpretrain ImageNet classifier checkpoint, as
``tools/model_converters/paddleclas2mm.py`` writes them) and
compares them with the state dict of the config's backbone (``--part
backbone``, the default) or whole model (``--part model``): how many keys
match, and which are missing, unexpected or of another shape. Exit status 0
when every key of the model part is there with its shape, 1 otherwise.

Example:
    python tools/analysis/check_checkpoint.py \\
        configs/rednet/mask-rcnn_rednet50_fpn_1x_coco.py \\
        checkpoints/rednet50_in1k.pth
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config

from mmplug_involution.apis import build_config_model, checkpoint_state_dict
from mmplug_involution.runtime import CheckpointError, load_checkpoint_file


def parse_args():
    parser = argparse.ArgumentParser(
        description='Report the missing, unexpected and mismatched keys of '
        'a checkpoint against a config\'s backbone or model.')
    parser.add_argument('config', help='an mmdet, mmseg or mmpretrain config')
    parser.add_argument('checkpoint', help='the checkpoint to check')
    parser.add_argument(
        '--part',
        choices=('backbone', 'model'),
        default='backbone',
        help='what the checkpoint is for (default backbone)')
    parser.add_argument(
        '--prefix',
        default=None,
        help='take only the checkpoint keys under this prefix, stripped '
        '(default: "backbone." for --part backbone, none for model)')
    return parser.parse_args()


def compare(expected: dict, found: dict) -> dict:
    """``matched``, ``missing``, ``unexpected`` and ``mismatched`` (key,
    expected shape, found shape) keys of ``found`` against ``expected``."""
    shared = sorted(set(expected) & set(found))
    mismatched = [(key, tuple(expected[key].shape), tuple(found[key].shape))
                  for key in shared
                  if tuple(expected[key].shape) != tuple(found[key].shape)]
    return dict(
        matched=len(shared) - len(mismatched),
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        mismatched=mismatched)


def main():
    args = parse_args()
    for kind, path in (('config', args.config), ('checkpoint',
                                                 args.checkpoint)):
        if not osp.isfile(path):
            sys.exit(f'check_checkpoint: error: {kind} file {path} not '
                     'found.')
    cfg = Config.fromfile(args.config)
    # what is checked is the checkpoint, not what the config would load
    cfg.model.pop('init_cfg', None)
    cfg.model.pop('pretrained', None)
    if args.part == 'backbone':
        cfg.model.backbone.pop('init_cfg', None)
        cfg.model.backbone.pop('pretrained', None)
    model = build_config_model(cfg)
    part = model.backbone if args.part == 'backbone' else model
    prefix = args.prefix if args.prefix is not None else (
        'backbone.' if args.part == 'backbone' else '')
    try:
        checkpoint = load_checkpoint_file(args.checkpoint, map_location='cpu')
    except CheckpointError as error:  # its message says what to do
        sys.exit(f'check_checkpoint: error: {error}')
    try:
        state = checkpoint_state_dict(checkpoint, args.checkpoint)
    except ValueError as error:
        sys.exit(f'check_checkpoint: error: {error}')
    found = {
        key[len(prefix):]: value
        for key, value in state.items()
        if key.startswith(prefix) and hasattr(value, 'shape')
    }
    if not found:
        sys.exit(f'check_checkpoint: error: no key of {args.checkpoint} '
                 f'starts with {prefix!r}; pass --prefix (e.g. --prefix "" '
                 'for a bare backbone state dict).')
    result = compare(part.state_dict(), found)
    print(f'{args.checkpoint} against the {args.part} of {args.config} '
          f'({type(part).__name__}), keys under {prefix!r}:')
    print(f'  matched: {result["matched"]}')
    for name in ('missing', 'unexpected'):
        print(f'  {name}: {len(result[name])}')
        for key in result[name]:
            print(f'    {key}')
    print(f'  shape mismatches: {len(result["mismatched"])}')
    for key, want, got in result['mismatched']:
        print(f'    {key}: the model needs {want}, the checkpoint has {got}')
    if result['missing'] or result['mismatched']:
        sys.exit(1)


if __name__ == '__main__':
    main()
