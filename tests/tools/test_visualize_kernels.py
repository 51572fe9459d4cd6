"""tools/analysis/visualize_kernels.py on the involution and X-volution demo
models (untrained weights: the mechanics, not the pictures)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmplug_involution.apis import build_config_model
from .common import tool_module

generate_coco_shapes = tool_module('coco_shapes', 'data').generate_coco_shapes

ROOT = Path(__file__).parents[2]
DEMOS = ROOT / 'configs' / 'demo'


def _tool(*args):
    return subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'analysis' / 'visualize_kernels.py'),
        *map(str, args)
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True)


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    data = tmp_path_factory.mktemp('shapes')
    generate_coco_shapes(
        data, num_train=1, num_val=1, image_size=96, seed=0, progress=False)
    return next((data / 'val').glob('*.png'))


@pytest.mark.parametrize('config, layer', [
    ('mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py',
     'backbone.layer2.0.conv2'),
    ('mask-rcnn_xvolution-r18-w16-pssa_fpn_1k_coco-shapes.py',
     'backbone.layer3.0.conv2'),
])
def test_draws_the_kernels_of_the_chosen_layer(config, layer, image, tmp_path):
    model = build_config_model(Config.fromfile(str(DEMOS / config)))
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'model.pth')
    result = _tool(DEMOS / config, tmp_path / 'model.pth', image, '--layers',
                   layer, '--points', '10,20', '50,60', '--out',
                   tmp_path / 'out')
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = tmp_path / 'out' / f'{layer}.png'
    assert drawn.is_file() and drawn.stat().st_size > 1000
    # a layer without a kernel, and a point off the image, are refused
    result = _tool(DEMOS / config, tmp_path / 'model.pth', image, '--layers',
                   'backbone.layer1.0.conv1', '--out', tmp_path / 'out')
    assert result.returncode != 0 and 'choose from' in result.stderr
    result = _tool(DEMOS / config, tmp_path / 'model.pth', image, '--points',
                   '500,5', '--out', tmp_path / 'out')
    assert result.returncode != 0 and 'outside the 96x96 image' in \
        result.stderr


def test_a_checkpoint_of_another_model_is_refused(image, tmp_path):
    torch.save(
        dict(state_dict=dict(weight=torch.zeros(3))), tmp_path / 'other.pth')
    config = DEMOS / 'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py'
    result = _tool(config, tmp_path / 'other.pth', image, '--out',
                   tmp_path / 'out')
    assert result.returncode != 0
    assert 'does not fit the model of' in result.stderr
    assert not (tmp_path / 'out').exists()
    (tmp_path / 'noise.pth').write_bytes(bytes(range(256)) * 4)
    result = _tool(config, tmp_path / 'noise.pth', image, '--out',
                   tmp_path / 'out')
    assert result.returncode != 0
    assert 'is corrupt or truncated' in result.stderr
    assert 'Traceback' not in result.stderr
