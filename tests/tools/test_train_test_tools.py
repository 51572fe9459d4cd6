"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on CPU.

For the three toolkits, on tiny generated shapes datasets: a tiny Mask
R-CNN (RedNet, involution FPN, RPN and mask heads; mmdet), a tiny Semantic
FPN (the segmentation demo's RedNet with involution FPN at 64 px; mmseg) and
the classification demo's RedNet classifier (mmpretrain). A few iterations
each, checking the mechanics (resume, 2-process gloo, evaluation,
--show-dir), not accuracy.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmplug_involution.apis import load_tool_config
from .common import tool_module

SHAPES_CLASSES = tool_module('shapes', 'data').SHAPES_CLASSES
generate_cls_shapes = tool_module('cls_shapes', 'data').generate_cls_shapes
generate_coco_shapes = tool_module('coco_shapes', 'data').generate_coco_shapes
generate_seg_shapes = tool_module('seg_shapes', 'data').generate_seg_shapes

ROOT = Path(__file__).parents[2]
SEG_DEMO = ROOT / 'configs' / 'demo' / \
    'inv-fpn_rednet26-w16_1xb16-1500_seg-shapes-128x128.py'
CLS_DEMO = ROOT / 'configs' / 'demo' / \
    'rednet26-w16_1xb32-2k_cls-shapes-64px.py'

DET_CONFIG = '''
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

SEG_CONFIG = '''
_base_ = ['{demo}']
data_root = '{data}/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=(64, 64)),
    dict(type='PackSegInputs')
]
model = dict(data_preprocessor=dict(size=(64, 64)))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
param_scheduler = []
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=1))
'''

CLS_CONFIG = '''
_base_ = ['{demo}']
data_root = '{data}/'
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''

NUM_VAL = 3


@pytest.fixture(scope='module', params=['det', 'seg', 'cls'])
def tiny_config(request, tmp_path_factory):
    """(task, config path) of a tiny detector, segmentor or classifier."""
    root = tmp_path_factory.mktemp(f'tiny_{request.param}')
    data = root / 'shapes'
    if request.param == 'det':
        generate_coco_shapes(
            data,
            num_train=8,
            num_val=NUM_VAL,
            image_size=96,
            seed=1,
            progress=False)
        cfg = root / 'mask-rcnn_rednet-tiny_inv-fpn-head_coco-shapes.py'
        cfg.write_text(
            DET_CONFIG.format(root=ROOT, data=data, classes=SHAPES_CLASSES))
    elif request.param == 'seg':
        # odd sizes; the whole 73x81 image at test time
        generate_seg_shapes(
            data,
            num_train=8,
            num_val=NUM_VAL,
            image_size=(81, 73),
            seed=1,
            progress=False)
        cfg = root / 'inv-fpn_rednet-tiny_1xb2-2_seg-shapes-64x64.py'
        cfg.write_text(SEG_CONFIG.format(demo=SEG_DEMO, data=data))
    else:  # the demo at 48x40: any image size goes through
        generate_cls_shapes(
            data,
            num_train=8,
            num_val=NUM_VAL,
            image_size=(48, 40),
            seed=1,
            progress=False)
        cfg = root / 'rednet26-w16_1xb2-2_cls-shapes-48x40.py'
        cfg.write_text(CLS_CONFIG.format(demo=CLS_DEMO, data=data))
    return request.param, cfg


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    return result


def _train(cfg, work_dir, *extra):
    return _run([
        sys.executable,
        str(ROOT / 'tools' / 'train.py'),
        str(cfg), '--work-dir',
        str(work_dir), *extra
    ])


def test_train_resume_and_test_with_show_dir(tiny_config, tmp_path):
    task, tiny_config = tiny_config
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
    assert (work /
            'last_checkpoint').read_text().strip().endswith('iter_4.pth')

    show = 'show'
    test_out = _run([
        sys.executable,
        str(ROOT / 'tools' / 'test.py'),
        str(tiny_config),
        str(work / 'iter_4.pth'), '--work-dir',
        str(tmp_path / 'test'), '--show-dir', show
    ])
    log = test_out.stdout + test_out.stderr
    if task == 'det':
        assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log
        drawn = list((tmp_path / 'test').glob(f'*/{show}/*.png'))
    elif task == 'seg':
        assert 'mIoU' in log and 'aAcc' in log
        drawn = list((tmp_path / 'test').glob(f'*/vis_data/{show}/*.png'))
    else:
        assert 'accuracy/top1' in log
        drawn = list((tmp_path / 'test').glob(f'*/{show}/*.png'))
    assert len(drawn) == NUM_VAL
    # the same checkpoint with BN folded into the convs: the same metrics
    folded = _run([
        sys.executable,
        str(ROOT / 'tools' / 'test.py'),
        str(tiny_config),
        str(work / 'iter_4.pth'), '--work-dir',
        str(tmp_path / 'test_folded'), '--fuse-conv-bn'
    ])
    assert 'FuseConvBNHook: folded' in folded.stdout + folded.stderr
    metrics = _printed_metrics(test_out.stdout)
    assert metrics and _printed_metrics(folded.stdout) == pytest.approx(
        metrics, abs=0.01)


def _printed_metrics(stdout: str) -> dict:
    """tools/test.py's metrics table as {name: value}."""
    rows = (
        line.strip('│ ').split('│') for line in stdout.splitlines()
        if line.count('│') == 3)
    return {
        name.strip(): float(value)
        for name, value in (row for row in rows if len(row) == 2)
        if value.strip().replace('.', '', 1).replace('-', '', 1).isdigit()
    }


def test_resume_from_missing_path_is_a_clear_error(tiny_config, tmp_path):
    _, tiny_config = tiny_config
    result = subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'train.py'),
        str(tiny_config), '--work-dir',
        str(tmp_path), '--resume',
        str(tmp_path / 'nope.pth')
    ],
                            cwd=ROOT,
                            capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert 'nope.pth: no such file' in result.stderr


KILLED_RUN = '''
_base_ = ['{config}']
custom_imports = dict(
    imports=['mmplug_involution', 'mmplug_involution.runtime',
             'tests.tools.sigkill_hook'],
    allow_failed_imports=False)
custom_hooks = [dict(type='SigkillAfterCheckpoint', iteration={iteration})]
'''
EXACT = [
    'randomness.seed=0', 'randomness.deterministic=True',
    'log_processor.window_size=1', 'train_cfg.max_iters=4'
]


def _launch(cfg, work_dir, processes, *extra, check=True):
    """tools/train.py, or tools/dist_train.sh with ``processes`` > 1."""
    if processes == 1:
        args = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(cfg)]
    else:
        args = [
            'bash',
            str(ROOT / 'tools' / 'dist_train.sh'),
            str(cfg),
            str(processes)
        ]
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PYTHONPATH=str(ROOT),
        PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run(
        [*args, '--work-dir', str(work_dir), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900)
    if check:
        assert result.returncode == 0, (
            result.stdout[-3000:] + result.stderr[-3000:])
    return result


def _losses(work_dir):
    """{iteration: logged scalars} over all runs in ``work_dir``."""
    by_iter = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                by_iter[record['iter']] = {
                    key: value
                    for key, value in record.items() if key.startswith('loss')
                }
    return by_iter


@pytest.mark.parametrize('processes', [1, 2])
def test_a_killed_and_resumed_run_ends_bitwise_as_the_straight_one(
        tiny_config, tmp_path, processes):
    """4 iterations straight against: SIGKILL right after the iteration-2
    checkpoint, then ``--resume`` to 4. Every tensor of the final checkpoint
    and every logged loss equal; one data-loader worker in the 1-process run
    (a worker-seeded augmentation pipeline, as in the demos)."""
    _, tiny_config = tiny_config
    workers = [] if processes > 1 else [
        'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=True'
    ]
    options = ['--cfg-options', *EXACT, *workers]
    killed_cfg = tmp_path / 'killed_after_iter_2.py'
    killed_cfg.write_text(KILLED_RUN.format(config=tiny_config, iteration=2))
    _launch(tiny_config, tmp_path / 'straight', processes, *options)
    killed = _launch(
        killed_cfg, tmp_path / 'resumed', processes, *options, check=False)
    assert killed.returncode != 0
    assert not (tmp_path / 'resumed' / 'iter_3.pth').exists()
    resumed = _launch(tiny_config, tmp_path / 'resumed', processes, '--resume',
                      *options)
    assert 'resumed epoch: 0, iter: 2' in resumed.stdout + resumed.stderr
    straight, resumed = (
        torch.load(
            tmp_path / run / 'iter_4.pth',
            map_location='cpu',
            weights_only=False) for run in ('straight', 'resumed'))
    differing = [
        key for key, value in straight['state_dict'].items()
        if not torch.equal(value, resumed['state_dict'][key])
    ]
    assert not differing, f'{len(differing)} tensors differ: {differing[:5]}'
    assert len(straight['random_states']) == processes
    losses = _losses(tmp_path / 'straight')
    assert sorted(losses) == [1, 2, 3, 4]
    assert _losses(tmp_path / 'resumed') == losses


def test_a_work_dir_of_an_earlier_run_is_refused(tiny_config, tmp_path):
    _, tiny_config = tiny_config
    (tmp_path / 'iter_2.pth').write_bytes(b'an earlier run')
    result = subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'train.py'),
        str(tiny_config), '--work-dir',
        str(tmp_path)
    ],
                            cwd=ROOT,
                            capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert 'already holds the checkpoints of an earlier run' in result.stderr
    assert (tmp_path / 'iter_2.pth').read_bytes() == b'an earlier run'


def test_two_process_gloo_training(tiny_config, tmp_path):
    _, tiny_config = tiny_config
    work = tmp_path / 'dist'
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run([
        'bash',
        str(ROOT / 'tools' / 'dist_train.sh'),
        str(tiny_config), '2', '--work-dir',
        str(work), '--cfg-options', 'model.backbone.norm_cfg.type=SyncBN'
    ],
                            cwd=ROOT,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, (
        result.stdout[-3000:] + result.stderr[-3000:])
    assert 'SyncBN needs CUDA' in log
    assert 'Distributed training is not used' not in log
    ckpt = torch.load(work / 'iter_2.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    scalars = sorted(work.glob('*/vis_data/scalars.json'))
    lines = [json.loads(line) for line in scalars[-1].read_text().splitlines()]
    losses = [r['loss'] for r in lines if 'loss' in r]
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses)))


DEMO_DIR = ROOT / 'configs' / 'demo'
DET_METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
               'coco/segm_mAP_50')
DEMOS = {
    'det': (DEMO_DIR / 'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py',
            generate_coco_shapes, DET_METRICS),
    'xvolution':
    (DEMO_DIR / 'mask-rcnn_xvolution-r18-w16-pssa_fpn_1k_coco-shapes.py',
     generate_coco_shapes, DET_METRICS),
    'dcd': (DEMO_DIR / 'mask-rcnn_r18-w16-dcd_fpn_1k_coco-shapes.py',
            generate_coco_shapes, DET_METRICS),
    'seg': (SEG_DEMO, generate_seg_shapes,
            ('aAcc:', 'mIoU:', 'mAcc:', '| background |', '|    ring    |')),
    'cls': (CLS_DEMO, generate_cls_shapes, ('accuracy/top1:', )),
}


@pytest.mark.parametrize('task', sorted(DEMOS))
def test_demo_config_is_seeded_and_repeats_bit_for_bit(task, tmp_path):
    """The demos' own configs (their seed, data-loader workers and
    augmentation): 2 iterations, their metrics, and a second run that ends
    with the same weights and losses to the bit."""
    config, generate, metric_keys = DEMOS[task]
    data = tmp_path / 'shapes'
    generate(
        data, num_train=8, num_val=4, image_size=128, seed=2, progress=False)
    options = [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1'
    ] + [
        f'{split}_dataloader.dataset.data_root={data}/'
        for split in ('train', 'val', 'test')
    ]
    if generate is generate_coco_shapes:
        ann = data / 'annotations' / 'instances_val.json'
        options += [
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
        ]
    runs = []
    for name in ('first', 'second'):
        work = tmp_path / name
        out = _train(config, work, '--cfg-options', *options)
        log = out.stdout + out.stderr
        for key in metric_keys:
            assert key in log
        scalars = next(work.glob('*/vis_data/scalars.json')).read_text()
        losses = [
            json.loads(line).get('loss') for line in scalars.splitlines()
        ]
        runs.append((torch.load(work / 'iter_2.pth', map_location='cpu'),
                     [loss for loss in losses if loss is not None]))
    (first, first_losses), (second, second_losses) = runs
    assert first['meta']['seed'] == second['meta']['seed'] == 0
    assert len(first_losses) == 2 and first_losses == second_losses
    differ = [
        key for key, value in first['state_dict'].items()
        if not torch.equal(value, second['state_dict'][key])
    ]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


def test_config_without_a_toolkit_scope_is_a_clear_error(tmp_path):
    config = tmp_path / 'no_scope.py'
    config.write_text("model = dict(type='RedNet', depth=26)\n")
    args = argparse.Namespace(
        config=str(config),
        local_rank=0,
        launcher='none',
        cfg_options=None,
        work_dir=None)
    with pytest.raises(
            ValueError,
            match='default_scope=None.*mmdet::, '
            'mmseg:: or mmpretrain::'):
        load_tool_config(args)


def test_show_options_turn_on_mmpretrain_visualization_hook():
    """mmpretrain's VisualizationHook is turned on by ``enable`` (the
    ``draw`` of mmdet's and mmseg's hooks would reach its visualizer and
    fail); ``--show-dir`` is placed on the built runner, as the end-to-end
    test above checks."""
    spec = importlib.util.spec_from_file_location('test_tool',
                                                  ROOT / 'tools' / 'test.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    hook = dict(type='VisualizationHook', enable=False, resize=256)
    cfg = Config(
        dict(
            default_scope='mmpretrain',
            default_hooks=dict(visualization=hook)))
    tool.enable_visualization(
        cfg, argparse.Namespace(show=True, show_dir='shown', wait_time=0.5))
    assert cfg.default_hooks.visualization == dict(
        hook, enable=True, interval=1, show=True, wait_time=0.5)
    cfg.default_hooks.pop('visualization')
    with pytest.raises(ValueError, match='mmdet/mmseg/mmpretrain bases'):
        tool.enable_visualization(
            cfg, argparse.Namespace(show=False, show_dir='shown', wait_time=2))

    class VisualizationHook:
        out_dir = None

    runner = argparse.Namespace(
        hooks=[VisualizationHook()], log_dir='work/20250101_000000')
    tool.show_dir_in_log_dir(runner, 'shown')
    assert runner.hooks[0].out_dir == 'work/20250101_000000/shown'
    runner.hooks = []
    with pytest.raises(ValueError, match="mmpretrain's VisualizationHook"):
        tool.show_dir_in_log_dir(runner, 'shown')
