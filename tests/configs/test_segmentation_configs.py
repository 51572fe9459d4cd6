"""Every shipped segmentation config builds, trains and predicts on CPU.

At a reduced input size, without the ImageNet checkpoint the configs point
to: one training iteration on two images of different odd sizes, then
inference in whole and in slide mode on an odd-sized image, checking that
the prediction covers the original image. Includes the demo config on the
generated shapes dataset.
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS, DefaultScope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

ROOT = Path(__file__).parents[2]
SEGMENTATION_CONFIGS = sorted(
    p for p in (ROOT / 'configs').rglob('*.py')
    if not p.name.startswith('_') and any(
        f'_{dataset}-' in p.name
        for dataset in ('cityscapes', 'ade20k', 'seg-shapes')))

# Parameters (M) published with the reference's Cityscapes table; UPerNet's
# count includes its auxiliary FCN head.
REFERENCE_PARAMS = {
    'fpn_rednet50_4xb2-80k_cityscapes-512x1024.py': 18.5,
    'inv-fpn_rednet50_4xb2-80k_cityscapes-512x1024.py': 16.4,
    'upernet_rednet50_4xb2-80k_cityscapes-512x1024.py': 56.4,
}


def build_segmentor(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == [
        'mmplug_involution', 'mmplug_involution.runtime'
    ]
    assert cfg.runner_type == 'SafeCheckpointRunner'
    assert cfg.default_scope == 'mmseg'
    cfg.model.backbone.init_cfg = None  # no ImageNet checkpoint in tests
    with DefaultScope.overwrite_default_scope('mmseg'):
        return cfg, MODELS.build(cfg.model)


def seg_batch(sizes, num_classes, seed=0):
    """Random uint8 images and label maps (with ignored pixels)."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for height, width in sizes:
        inputs.append(
            torch.randint(
                0,
                256, (3, height, width),
                dtype=torch.uint8,
                generator=generator))
        labels = torch.randint(
            0, num_classes, (1, height, width), generator=generator)
        labels[:, :3] = 255
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(height, width), ori_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_reference_table_is_covered():
    names = {p.name for p in SEGMENTATION_CONFIGS}
    assert set(REFERENCE_PARAMS) <= names
    for algorithm in ('pspnet', 'deeplabv3plus'):
        assert {
            f'{algorithm}_rednet50-d8_4xb2-80k_cityscapes-512x1024.py',
            f'{algorithm}_rednet50-d8_4xb4-80k_ade20k-512x512.py'
        } <= names


@pytest.mark.parametrize('name', sorted(REFERENCE_PARAMS))
def test_parameters_match_the_reference_table(name):
    _, model = build_segmentor(ROOT / 'configs' / 'rednet' / name)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(REFERENCE_PARAMS[name], abs=0.05)


@pytest.mark.parametrize('path', SEGMENTATION_CONFIGS, ids=lambda p: p.name)
def test_config_trains_one_iteration_and_predicts(path):
    cfg, model = build_segmentor(path)
    num_classes = model.decode_head.num_classes
    backbone = model.backbone
    assert type(backbone).__name__ == 'RedNet'
    neck = type(getattr(model, 'neck', None)).__name__
    assert (neck == 'InvolutionFPN') == path.name.startswith('inv-fpn')
    if '-d8_' in path.name:  # output stride 8: stages 3, 4 dilated
        assert backbone.strides == (1, 2, 1, 1)
        assert backbone.dilations == (1, 1, 2, 4)
        assert backbone.layer4[0].conv2.dilation == 2  # contract_dilation
    torch.manual_seed(0)
    model.data_preprocessor.size = (97, 129)  # pad to a reduced crop
    model.train()
    data = model.data_preprocessor(
        seg_batch([(89, 121), (97, 129)], num_classes), True)
    assert data['inputs'].shape == (2, 3, 97, 129)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    involution_weight = backbone.stem[1].conv2.conv.weight
    assert involution_weight.grad is not None
    assert involution_weight.grad.abs().sum() > 0

    model.eval()
    height, width = 75, 101
    for test_cfg in (dict(mode='whole'),
                     dict(mode='slide', crop_size=(64, 64), stride=(43, 43))):
        model.test_cfg = ConfigDict(test_cfg)
        with torch.no_grad():
            result = model(
                **model.data_preprocessor(
                    seg_batch([(height, width)], num_classes, seed=1), False),
                mode='predict')
        assert len(result) == 1
        logits = result[0].seg_logits.data
        labels = result[0].pred_sem_seg.data
        assert logits.shape == (num_classes, height, width), test_cfg
        assert torch.isfinite(logits).all()
        assert labels.shape == (1, height, width)
        assert torch.equal(labels[0], logits.argmax(0))
