"""tools/deploy/xvolution_to_deploy.py: round trip and error cases.

A tiny Faster R-CNN whose backbone is a narrow XVolutionResNet-50 with
X-volution in stages 2 and 3 (stride-2 layers included), with random BN
statistics so that the folding is exercised: its deploy config and
checkpoint load strictly and predict what the training form predicts, and
``tools/test.py`` evaluates them.
"""
import sys
from pathlib import Path

import pytest
import torch
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmplug_involution.layers import XVolution
from .common import load_tool, run_script, tool_module

SHAPES_CLASSES = tool_module('shapes', 'data').SHAPES_CLASSES
generate_coco_shapes = tool_module('coco_shapes', 'data').generate_coco_shapes
ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'deploy' / 'xvolution_to_deploy.py'

CONFIG = '''
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
          '{root}/configs/_base_/plugin.py']
data_root = '{data}/'
metainfo = dict(classes={classes})
model = dict(
    backbone=dict(_delete_=True, type='XVolutionResNet', depth=50,
                  base_channels=8, frozen_stages=-1, norm_eval=False,
                  xvolution=dict(type='XVolution', attention='{attention}'),
                  stage_with_xvolution={stages}),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32, num_classes=6)))
test_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=[
                     dict(type='LoadImageFromFile'),
                     dict(type='Resize', scale=(64, 64), keep_ratio=True),
                     dict(type='LoadAnnotations', with_bbox=True),
                     dict(type='PackDetInputs', meta_keys=(
                         'img_id', 'img_path', 'ori_shape', 'img_shape',
                         'scale_factor'))
                 ]))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
'''
STAGES = (False, True, True, False)


def _write_config(folder, attention='pssa', stages=STAGES, data='data'):
    path = Path(folder) / f'faster-rcnn_xvolution-{attention}-tiny.py'
    path.write_text(
        CONFIG.format(
            root=ROOT,
            data=data,
            classes=SHAPES_CLASSES,
            attention=attention,
            stages=stages))
    return path


def _build(path):
    cfg = Config.fromfile(str(path))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model).eval()


def _randomise(model):
    """Random BN statistics and affines, PSSA logit scales and biases."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
        for name, param in model.named_parameters():
            if name.endswith('logit_scale'):
                param.uniform_(0.5, 2)


def _relative_error(actual, expected):
    return ((actual - expected).abs().max() /
            expected.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope='module')
def tool():
    """The tool's module, to call ``main`` in this process."""
    return load_tool(TOOL)


def _main(tool, monkeypatch, *args):
    """The tool's ``main`` in-process; returns its error message."""
    monkeypatch.setattr(sys, 'argv', [str(TOOL), *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        tool.main()
    assert isinstance(exit_info.value.code, str)  # message, status 1
    return exit_info.value.code


@pytest.fixture(scope='module', params=['pssa', 'involution'])
def converted(request, tmp_path_factory):
    """(training-form model, config, checkpoint, deploy dir, tool output)."""
    root = tmp_path_factory.mktemp(f'xvolution_deploy_{request.param}')
    data = root / 'shapes'
    generate_coco_shapes(
        data, num_train=1, num_val=2, image_size=64, seed=3, progress=False)
    config = _write_config(root, request.param, data=data)
    model = _build(config)
    _randomise(model)
    checkpoint = root / 'iter_7.pth'
    torch.save(
        dict(meta=dict(iter=7), state_dict=model.state_dict()), checkpoint)
    out = root / 'deploy'
    result = run_script(TOOL, config, checkpoint, out)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return model, config, checkpoint, out, result.stdout


def test_round_trip_predicts_as_the_training_form(converted):
    model, config, _, out, stdout = converted
    deploy_config = out / f'{config.stem}_deploy.py'
    deploy_checkpoint = out / 'iter_7_deploy.pth'
    # 4 Bottlenecks of stage 2 plus 6 of stage 3, one X-volution each
    assert 'Fused 10 of 10 XVolution layers' in stdout
    assert f'tools/test.py {deploy_config} {deploy_checkpoint}' in stdout
    deployed = _build(deploy_config)
    load_checkpoint(deployed, str(deploy_checkpoint), strict=True)
    layers = [m for m in deployed.modules() if isinstance(m, XVolution)]
    assert len(layers) == 10 and all(layer.deploy for layer in layers)
    assert not any(hasattr(layer, 'conv') for layer in layers)
    meta = torch.load(deploy_checkpoint, weights_only=True)['meta']
    assert meta['iter'] == 7
    assert meta['xvolution_deploy']['fused_layers'] == 10

    # backbone + FPN features, then the RoI head's class scores and box
    # deltas on the same proposals (post-NMS predictions could flip on
    # near-tied scores)
    torch.manual_seed(1)
    packed = demo_mm_inputs(2, [[3, 64, 80], [3, 48, 64]], num_classes=6)
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        feats = model.extract_feat(data['inputs'])
        proposals = model.rpn_head.predict(
            feats, data['data_samples'], rescale=False)
        expected = [*feats, *model.roi_head.forward(feats, proposals)]
        feats = deployed.extract_feat(data['inputs'])
        actual = [*feats, *deployed.roi_head.forward(feats, proposals)]
    assert len(actual) == len(expected) == 5 + 2
    for out, ref in zip(actual, expected):
        assert out.shape == ref.shape
        assert _relative_error(out, ref) <= 1e-5


def test_deploy_outputs_evaluate_with_tools_test(converted, tmp_path):
    _, config, _, out, _ = converted
    result = run_script(ROOT / 'tools' / 'test.py',
                        out / f'{config.stem}_deploy.py',
                        out / 'iter_7_deploy.pth', '--work-dir', tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert 'coco/bbox_mAP' in result.stdout


def test_existing_outputs_need_overwrite(converted, tool, monkeypatch, capsys):
    _, config, checkpoint, out, _ = converted
    message = _main(tool, monkeypatch, config, checkpoint, out)
    assert 'exist' in message and '--overwrite' in message
    monkeypatch.setattr(
        sys, 'argv',
        [str(TOOL), *map(str, (config, checkpoint, out)), '--overwrite'])
    tool.main()
    assert 'Fused 10 of 10' in capsys.readouterr().out
    assert not list(out.glob('.*.tmp'))  # atomic writes leave no temp files


def test_mark_deploy_skips_sa_and_fills_the_default(tool):
    cfg = dict(
        backbone=dict(type='XVolutionResNet', depth=18),
        layers=[
            dict(type='XVolution', attention='sa'),
            dict(type='XVolution', attention='involution'),
            (dict(dcn=dict(type='XVolution')), )
        ])
    assert tool.mark_deploy(cfg) == 3
    assert cfg['backbone']['xvolution'] == dict(
        type='XVolution', attention='pssa', deploy=True)
    assert 'deploy' not in cfg['layers'][0]
    assert cfg['layers'][1]['deploy'] and cfg['layers'][2][0]['dcn']['deploy']


def test_missing_files_are_clear_errors(tool, monkeypatch, tmp_path):
    config, checkpoint = _write_config(tmp_path), tmp_path / 'iter_1.pth'
    checkpoint.touch()
    message = _main(tool, monkeypatch, tmp_path / 'nope.py', checkpoint,
                    tmp_path)
    assert 'config file' in message and 'nope.py not found' in message
    message = _main(tool, monkeypatch, config, tmp_path / 'nope.pth', tmp_path)
    assert 'checkpoint file' in message and 'nope.pth not found' in message
    checkpoint.write_bytes(b'PK\x03\x04' + bytes(500))  # a broken zip
    message = _main(tool, monkeypatch, config, checkpoint, tmp_path / 'out')
    assert f'Checkpoint {checkpoint} is corrupt or truncated' in message
    assert not (tmp_path / 'out').exists()


def test_config_without_xvolution_is_a_clear_error(tool, monkeypatch,
                                                   tmp_path):
    checkpoint = tmp_path / 'iter_1.pth'
    checkpoint.touch()
    config = _write_config(tmp_path, stages=(False, ) * 4)
    message = _main(tool, monkeypatch, config, checkpoint, tmp_path / 'out')
    assert 'has no XVolution layer' in message
    assert not (tmp_path / 'out').exists()


def test_all_sa_is_nothing_to_fuse(tmp_path):
    checkpoint = tmp_path / 'iter_1.pth'
    checkpoint.touch()
    config = _write_config(tmp_path, attention='sa')
    result = run_script(TOOL, config, checkpoint, tmp_path / 'out')
    assert result.returncode != 0
    assert "use attention='sa'" in result.stderr
    assert 'nothing to fuse' in result.stderr
    assert not (tmp_path / 'out').exists()
