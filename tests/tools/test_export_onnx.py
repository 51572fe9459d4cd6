"""Every model family of the package exports to ONNX and runs in ONNX Runtime.

RedNet, the involution FPN with the involution RPN head (in a detector), the
involution mask head, a segmentor, X-volution (training and deploy forms),
DCD, CondConv and DynamicConv: exported once with dynamic batch and spatial
axes, with both exporters, and run at two input sizes; ONNX Runtime's
outputs must equal PyTorch's within 1e-4 of each output's largest magnitude.
Then tools/deploy/export_onnx.py end to end, and its errors.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmplug_involution.apis import build_config_model
from mmplug_involution.deploy import (TensorOutputs, compare_with_onnxruntime,
                                      export_onnx)
from mmplug_involution.layers import switch_xvolution_to_deploy

ROOT = Path(__file__).parents[2]
DEMOS = ROOT / 'configs' / 'demo'
DET_DEMO = DEMOS / 'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py'
SEG_DEMO = DEMOS / 'inv-fpn_rednet26-w16_1xb16-1500_seg-shapes-128x128.py'
TOLERANCE = 1e-4


def _xvolution(attention):
    return dict(
        type='XVolutionResNet',
        depth=18,
        stem_channels=16,
        base_channels=16,
        xvolution=dict(type='XVolution', attention=attention),
        stage_with_xvolution=(False, False, True, False))


def _dynamic(conv_type):
    # mmdet's BasicBlock (ResNet-18) takes no dcn: a narrow ResNet-50
    return dict(
        type='ResNet',
        depth=50,
        stem_channels=16,
        base_channels=8,
        dcn=dict(type=conv_type),
        stage_with_dcn=(False, False, False, True))


# family: (model config or demo config path, deploy form, (N, C, H, W))
FAMILIES = {
    'rednet':
    (dict(type='RedNet', depth=26, stem_channels=32,
          base_channels=16), False, (2, 3, 64, 64)),
    'detector-inv-fpn-rpn': (DET_DEMO, False, (1, 3, 64, 64)),
    'inv-mask-head': (dict(
        type='InvolutionFCNMaskHead',
        num_convs=2,
        in_channels=32,
        conv_out_channels=32,
        num_classes=3), False, (3, 32, 14, 14)),
    'segmentor': (SEG_DEMO, False, (1, 3, 64, 64)),
    'xvolution-pssa': (_xvolution('pssa'), False, (2, 3, 64, 64)),
    'xvolution-pssa-deploy': (_xvolution('pssa'), True, (2, 3, 64, 64)),
    'xvolution-involution-deploy':
    (_xvolution('involution'), True, (2, 3, 64, 64)),
    'xvolution-sa': (_xvolution('sa'), False, (2, 3, 64, 64)),
    'dcd': (_dynamic('DCDConv2d'), False, (2, 3, 64, 64)),
    # the DCD authors' ResNet-18 layout: squeezes of 2x2-pooled inputs, odd
    # stage-4 maps (3x5) in the second input
    'dcd-resnet18-pooled': (dict(
        type='DCDResNet',
        depth=18,
        stem_channels=16,
        base_channels=16,
        dcd_cfg=dict(type='DCDConv2d', pool_size=2)), False, (2, 3, 64, 96)),
    'condconv': (_dynamic('CondConv2d'), False, (2, 3, 64, 64)),
    'dynamicconv': (_dynamic('DynamicConv2d'), False, (2, 3, 64, 64)),
}


def _build(source, deploy):
    if isinstance(source, Path):
        cfg = Config.fromfile(str(source))
    else:
        cfg = Config(dict(model=source, default_scope='mmdet'))
    torch.manual_seed(0)
    model = build_config_model(cfg)
    if deploy:
        assert switch_xvolution_to_deploy(model) > 0
    return TensorOutputs(model)


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_the_family_exports_and_onnx_runtime_agrees(family, exporter,
                                                    tmp_path):
    source, deploy, shape = FAMILIES[family]
    module = _build(source, deploy)
    generator = torch.Generator().manual_seed(1)
    example = torch.randn(*shape, generator=generator)
    spatial = shape[2] >= 32  # a mask head takes fixed 14x14 RoI features
    path = str(tmp_path / f'{family}.onnx')
    export_onnx(
        module,
        example,
        path,
        dynamic=True,
        exporter=exporter,
        size_divisor=32,
        dynamic_spatial=spatial)
    n, c, h, w = shape
    other = (n + 1, c, h + 32, w + 64) if spatial else (n + 2, c, h, w)
    results = compare_with_onnxruntime(
        path, module,
        [example, torch.randn(*other, generator=generator)])
    assert [r['shape'] for r in results] == [shape, other]
    for result in results:
        assert result['max_rel'] <= TOLERANCE, result


def _tool(*args):
    return subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'deploy' / 'export_onnx.py'), *map(str, args)
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True)


def test_the_tool_exports_checks_and_compares(tmp_path):
    out = tmp_path / 'onnx' / 'seg.onnx'
    result = _tool(SEG_DEMO, '--out', out, '--shape', 64, 96, '--dynamic')
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    assert 'the ONNX checker passed' in result.stdout
    lines = [
        line for line in result.stdout.splitlines()
        if line.startswith('ONNX Runtime vs PyTorch')
    ]
    assert len(lines) == 2  # the example and a second batch and size
    assert '(1, 3, 64, 96)' in lines[0] and '(2, 3, 96, 160)' in lines[1]
    assert not list(out.parent.glob('.export_onnx.*'))
    # an existing file is not replaced without --overwrite
    before = out.read_bytes()
    result = _tool(SEG_DEMO, '--out', out)
    assert result.returncode != 0 and '--overwrite' in result.stderr
    assert out.read_bytes() == before


def test_the_tool_refuses_a_checkpoint_of_another_model(tmp_path):
    torch.save(
        dict(state_dict=dict(weight=torch.zeros(3))), tmp_path / 'other.pth')
    result = _tool(SEG_DEMO, tmp_path / 'other.pth', '--out',
                   tmp_path / 'x.onnx', '--shape', 64, 64)
    assert result.returncode != 0
    assert 'does not fit the model of' in result.stderr
    assert not (tmp_path / 'x.onnx').exists()
    # a damaged file: the loader's message, not a traceback
    (tmp_path / 'half.pth').write_bytes(
        (tmp_path / 'other.pth').read_bytes()[:300])
    result = _tool(SEG_DEMO, tmp_path / 'half.pth', '--out',
                   tmp_path / 'x.onnx', '--shape', 64, 64)
    assert result.returncode != 0
    assert 'is corrupt or truncated' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'x.onnx').exists()


def test_the_tool_refuses_a_size_off_the_divisor(tmp_path):
    result = _tool(SEG_DEMO, '--out', tmp_path / 'x.onnx', '--shape', 64, 70,
                   '--dynamic')
    assert result.returncode != 0
    assert 'must be multiples of --size-divisor 32' in result.stderr


def test_the_tool_exports_a_checkpoints_weights(tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    model = build_config_model(Config.fromfile(str(SEG_DEMO)))
    with torch.no_grad():
        model.decode_head.conv_seg.bias.fill_(1234.5)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'seg.pth')
    out = tmp_path / 'seg.onnx'
    result = _tool(SEG_DEMO, tmp_path / 'seg.pth', '--out', out, '--shape', 64,
                   64)
    assert result.returncode == 0, result.stderr[-3000:]
    values = [
        numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
    ]
    classes = model.decode_head.conv_seg.bias.numel()
    assert any(v.size == classes and np.all(v == 1234.5) for v in values)
