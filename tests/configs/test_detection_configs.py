"""Every shipped detection config builds, trains one iteration and predicts.

RedNet/involution configs, X-volution ones and the dynamic-conv ones.

On CPU at a reduced input size (128x160), without loading the ImageNet
checkpoint the configs point to. Includes the demo config on the generated
shapes dataset.
"""
import re
from pathlib import Path

import pytest
import torch
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

ROOT = Path(__file__).parents[2]
DETECTION_CONFIGS = sorted(
    p for p in (ROOT / 'configs').rglob('*.py')
    if not p.name.startswith('_') and 'coco' in p.name)
# config name part -> the layer type such a config builds instead of RedNet
OPERATORS = {
    'xvolution': 'XVolution',
    'dcd': 'DCDConv2d',
    'condconv': 'CondConv2d',
    'dyconv': 'DynamicConv2d',
}


def test_reference_table_is_covered():
    names = {p.name for p in DETECTION_CONFIGS}
    for det in ('faster-rcnn', 'mask-rcnn'):
        for neck in ('fpn', 'inv-fpn', 'inv-fpn-head'):
            assert f'{det}_rednet50_{neck}_1x_coco.py' in names
    assert {
        'retinanet_rednet50_fpn_1x_coco.py',
        'retinanet_rednet50_inv-fpn_1x_coco.py',
        'mask-rcnn_rednet101_fpn_1x_coco.py',
        'cascade-mask-rcnn_rednet50_fpn_1x_coco.py'
    } <= names


@pytest.mark.parametrize('path', DETECTION_CONFIGS, ids=lambda p: p.name)
def test_config_trains_one_iteration_and_predicts(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == [
        'mmplug_involution', 'mmplug_involution.runtime'
    ]
    assert cfg.runner_type == 'SafeCheckpointRunner'
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        torch.manual_seed(0)
        packed = demo_mm_inputs(
            2, [[3, 128, 160], [3, 112, 128]],
            num_classes=6 if 'coco-shapes' in path.name else 80,
            with_mask='mask' in path.name)
        model.train()
        data = model.data_preprocessor(packed, True)
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        assert torch.isfinite(loss)
        loss.backward()
        model.eval()
        with torch.no_grad():
            results = model(
                **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    assert 'bboxes' in results[0].pred_instances
    if 'mask' in path.name:
        assert 'masks' in results[0].pred_instances
    names = {type(m).__name__ for m in model.modules()}
    operator = next((key for key in OPERATORS if key in path.name), None)
    for key, layer in OPERATORS.items():
        assert (layer in names) == (key == operator), layer
    assert ('RedNet' in names) == (operator is None)
    if 'xvolution' in path.name:
        attention = re.search(r'-(pssa|sa|involution)_', path.name)[1]
        assert {
            m.attention_type
            for m in model.modules() if type(m).__name__ == 'XVolution'
        } == {attention}
    assert ('InvolutionFPN' in names) == ('inv-fpn' in path.name)
    assert ('InvolutionRPNHead' in names) == ('inv-fpn-head' in path.name)
