"""Convert a trained X-volution model to its deploy form.

Every ``XVolution`` with a local attention (``pssa``, ``involution``) has
its two branches and both BatchNorms folded into one dynamic convolution
(``XVolution.switch_to_deploy``); ``sa`` layers stay two-branch. Writes the
deploy config (``deploy=True`` in those layers' config dicts) and the deploy
checkpoint, which loads strictly into the model built from it; in eval mode
its outputs equal the trained model's.

Example:
    python tools/deploy/xvolution_to_deploy.py CONFIG CHECKPOINT OUT_DIR
writes ``OUT_DIR/<config stem>_deploy.py`` and
``OUT_DIR/<checkpoint stem>_deploy.pth``; test them with
``python tools/test.py OUT_DIR/<config stem>_deploy.py
OUT_DIR/<checkpoint stem>_deploy.pth``.
"""
import argparse
import io
import os.path as osp
import sys
from typing import Any, NoReturn

import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import weights_to_cpu

from mmplug_involution.apis import (build_config_model, iter_config_dicts,
                                    load_config_checkpoint)
from mmplug_involution.layers import XVolution, switch_xvolution_to_deploy
from mmplug_involution.runtime import CheckpointError, atomic_write


def parse_args():
    parser = argparse.ArgumentParser(
        description='Fold the X-volutions of a trained model into single '
        'dynamic convolutions (deploy form).')
    parser.add_argument('config', help='the training config')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument(
        'out_dir', help='folder for the deploy config and checkpoint')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace existing output files')
    return parser.parse_args()


def mark_deploy(cfg: Any) -> int:
    """Set ``deploy=True`` in every local-attention XVolution config dict.

    Walks ``cfg`` (dicts, lists, tuples) recursively. An ``XVolutionResNet``
    without an ``xvolution`` dict gets its default one, marked. Returns how
    many dicts were marked; ``attention='sa'`` dicts are left as they are.
    """
    count = 0
    for node in iter_config_dicts(cfg):
        if node.get('type') == 'XVolutionResNet' and 'xvolution' not in node:
            node['xvolution'] = dict(type='XVolution', attention='pssa')
        if node.get('type') == 'XVolution' and \
                node.get('attention', 'pssa') != 'sa':
            node['deploy'] = True
            count += 1
    return count


def fail(message: str) -> NoReturn:
    """Exit with status 1 after printing ``message`` to stderr."""
    sys.exit(f'xvolution_to_deploy: error: {message}')


def main():
    args = parse_args()
    for kind, path in (('config', args.config), ('checkpoint',
                                                 args.checkpoint)):
        if not osp.isfile(path):
            fail(f'{kind} file {path} not found.')
    stem = osp.splitext(osp.basename(args.config))[0]
    out_config = osp.join(args.out_dir, f'{stem}_deploy.py')
    out_checkpoint = osp.join(
        args.out_dir,
        osp.splitext(osp.basename(args.checkpoint))[0] + '_deploy.pth')
    existing = [p for p in (out_config, out_checkpoint) if osp.exists(p)]
    if existing and not args.overwrite:
        fail(f'{" and ".join(existing)} exist(s); pass --overwrite to '
             'replace.')

    cfg = Config.fromfile(args.config)
    model = build_config_model(cfg)
    layers = [m for m in model.modules() if isinstance(m, XVolution)]
    if not layers:
        fail(f'the model of {args.config} has no XVolution layer: nothing '
             'to convert.')
    if all(layer.attention_type == 'sa' for layer in layers):
        fail(f"all {len(layers)} XVolution layers of {args.config} use "
             "attention='sa', which has no deploy form (global attention "
             'does not fold into a local kernel): nothing to fuse. Test the '
             'training-form checkpoint as it is.')
    if any(layer.deploy for layer in layers):
        fail(f'{args.config} already builds deploy-form X-volutions.')

    try:
        checkpoint = load_config_checkpoint(model, args.checkpoint,
                                            args.config)
    except CheckpointError as error:
        fail(str(error))
    except ValueError as error:
        fail(f'{error} (is it a training-form checkpoint of this config?)')
    fused = switch_xvolution_to_deploy(model)
    state_dict = weights_to_cpu(model.state_dict())

    deploy_cfg = cfg.to_dict()
    mark_deploy(deploy_cfg)
    text = Config(deploy_cfg).pretty_text
    # the written config must build the model this checkpoint loads into
    try:
        build_config_model(Config.fromstring(text, '.py')).load_state_dict(
            state_dict, strict=True)
    except RuntimeError as error:
        fail('the deploy config does not build the fused model (are some '
             'X-volutions built from arguments outside the config?): '
             f'{error}')

    meta = dict(checkpoint.get('meta') or {})
    meta['xvolution_deploy'] = dict(
        source_config=osp.abspath(args.config),
        source_checkpoint=osp.abspath(args.checkpoint),
        fused_layers=fused,
        two_branch_layers=len(layers) - fused)
    buffer = io.BytesIO()
    torch.save(dict(meta=meta, state_dict=state_dict), buffer)
    atomic_write(out_config, text.encode('utf-8'))
    atomic_write(out_checkpoint, buffer.getvalue())

    two_branch = len(layers) - fused
    print(f'Fused {fused} of {len(layers)} XVolution layers into single '
          'dynamic convolutions' +
          (f" ({two_branch} attention='sa' layers stay two-branch)."
           if two_branch else '.'))
    print(f'Wrote {out_config}\n      {out_checkpoint}')
    print(f'Test with: python tools/test.py {out_config} {out_checkpoint}')


if __name__ == '__main__':
    main()
