"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on CPU.

A tiny Mask R-CNN (RedNet, involution FPN, RPN and mask heads) on a tiny
generated shapes dataset: a few iterations each, checking the mechanics
(resume, 2-process gloo, evaluation, --show-dir), not accuracy.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmplug_involution.datasets import SHAPES_CLASSES, generate_coco_shapes

ROOT = Path(__file__).parents[2]

CONFIG = '''
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
          '{root}/configs/_base_/plugin.py']
data_root = '{data}/'
metainfo = dict(classes={classes})
model = dict(
    backbone=dict(_delete_=True, type='RedNet', depth=26, stem_channels=32,
                  base_channels=16, frozen_stages=-1, norm_eval=False,
                  stem_kernel_size=3),
    neck=dict(type='InvolutionFPN', in_channels=[64, 128, 256, 512],
              out_channels=32, num_outs=5),
    rpn_head=dict(type='InvolutionRPNHead', in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=6),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(type='InvolutionFCNMaskHead', in_channels=32,
                       conv_out_channels=32, num_classes=6)))
pipeline_train = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='PackDetInputs')
]
pipeline_test = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                          'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=pipeline_train))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=pipeline_test))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'])
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2,
                 val_interval=100)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.01),
                     clip_grad=dict(max_norm=5, norm_type=2))
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False))
log_processor = dict(by_epoch=False)
'''


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_det')
    data = root / 'shapes'
    generate_coco_shapes(data, num_train=8, num_val=4, image_size=96,
                         seed=1, progress=False)
    cfg = root / 'mask-rcnn_rednet-tiny_inv-fpn-head_coco-shapes.py'
    cfg.write_text(CONFIG.format(root=ROOT, data=data,
                                 classes=SHAPES_CLASSES))
    return cfg


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True,
                            text=True, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    return result


def _train(cfg, work_dir, *extra):
    return _run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(cfg),
                 '--work-dir', str(work_dir), *extra])


def test_train_resume_and_test_with_show_dir(tiny_config, tmp_path):
    work = tmp_path / 'work'
    _train(tiny_config, work)
    first = torch.load(work / 'iter_2.pth', map_location='cpu')
    assert first['meta']['iter'] == 2
    assert not list(work.glob('.*.tmp'))  # atomic writes leave no temp files
    # "interrupted" at iteration 2: resume and go on to 4
    out = _train(tiny_config, work, '--resume', '--cfg-options',
                 'train_cfg.max_iters=4')
    log = out.stdout + out.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    resumed = torch.load(work / 'iter_4.pth', map_location='cpu')
    assert resumed['meta']['iter'] == 4
    # optimizer state carried over (momentum buffers exist for every param)
    assert resumed['optimizer']['state']
    assert (work / 'last_checkpoint').read_text().strip().endswith(
        'iter_4.pth')

    show = 'show'
    test_out = _run([
        sys.executable,
        str(ROOT / 'tools' / 'test.py'),
        str(tiny_config),
        str(work / 'iter_4.pth'), '--work-dir',
        str(tmp_path / 'test'), '--show-dir', show
    ])
    log = test_out.stdout + test_out.stderr
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log
    drawn = list((tmp_path / 'test').glob(f'*/{show}/*.png'))
    assert len(drawn) == 4


def test_resume_from_missing_path_is_a_clear_error(tiny_config, tmp_path):
    result = subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'train.py'),
        str(tiny_config), '--work-dir',
        str(tmp_path), '--resume',
        str(tmp_path / 'nope.pth')
    ], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert 'nope.pth: no such file' in result.stderr


def test_two_process_gloo_training(tiny_config, tmp_path):
    work = tmp_path / 'dist'
    env = dict(os.environ, PYTHON=sys.executable,
               PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run([
        'bash',
        str(ROOT / 'tools' / 'dist_train.sh'),
        str(tiny_config), '2', '--work-dir',
        str(work), '--cfg-options', 'model.backbone.norm_cfg.type=SyncBN'
    ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-3000:])
    assert 'SyncBN needs CUDA' in log
    assert 'Distributed training is not used' not in log
    ckpt = torch.load(work / 'iter_2.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    scalars = sorted(work.glob('*/vis_data/scalars.json'))
    lines = [
        json.loads(line) for line in scalars[-1].read_text().splitlines()
    ]
    losses = [r['loss'] for r in lines if 'loss' in r]
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses)))


def test_demo_config_smoke(tmp_path):
    """The README demo's own config: 2 iterations, then COCO bbox+segm AP."""
    data = tmp_path / 'shapes'
    generate_coco_shapes(data, num_train=8, num_val=4, image_size=128,
                         seed=2, progress=False)
    config = ROOT / 'configs' / 'demo' / \
        'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py'
    ann = data / 'annotations' / 'instances_val.json'
    out = _train(
        config, tmp_path / 'work', '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.logger.interval=1',
        f'train_dataloader.dataset.data_root={data}/',
        f'val_dataloader.dataset.data_root={data}/',
        f'test_dataloader.dataset.data_root={data}/',
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False')
    log = out.stdout + out.stderr
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                'coco/segm_mAP_50'):
        assert key in log
    assert (tmp_path / 'work' / 'iter_2.pth').exists()
