"""Stock mmdet/mmseg configs take our operators by a ``type`` edit alone.

Each config below is a toolkit's own, changed only as a user's first edit
would: ``type='RedNet'`` for the backbone (plus turning off the base's ResNet
checkpoint), or ``type=`` for the neck and heads, everything else the base
sets still there. Each builds, trains one step with a finite loss on small
random inputs and predicts, on CPU.
"""
import pytest
import torch
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mmplug_involution.layers import Involution
from mmplug_involution.models import RedNet
from .test_segmentation_configs import seg_batch

HEADER = ("custom_imports = dict(imports=['mmplug_involution', "
          "'mmplug_involution.runtime'], allow_failed_imports=False)\n"
          "runner_type = 'SafeCheckpointRunner'\n")
NO_CHECKPOINT = dict(backbone=dict(type='RedNet', init_cfg=None))

# base config -> the model edit (besides the backbone type, where given)
DETECTION = {
    'retinanet/retinanet_r50_fpn_1x_coco.py':
    NO_CHECKPOINT,
    'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py':
    NO_CHECKPOINT,
    'atss/atss_r50_fpn_1x_coco.py':
    NO_CHECKPOINT,
    'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py':
    NO_CHECKPOINT,
    'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py':
    NO_CHECKPOINT,
    'mask_rcnn/mask-rcnn_r50-caffe_fpn_1x_coco.py':
    NO_CHECKPOINT,
    'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py':
    NO_CHECKPOINT,
    'gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py':
    NO_CHECKPOINT,
    # the necks and heads by type, on the stock ResNet-50
    'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py#heads':
    dict(
        backbone=dict(init_cfg=None),
        neck=dict(type='InvolutionFPN'),
        rpn_head=dict(type='InvolutionRPNHead'),
        roi_head=dict(mask_head=dict(type='InvolutionFCNMaskHead'))),
    'retinanet/retinanet_r50_fpn_1x_coco.py#neck':
    dict(backbone=dict(init_cfg=None), neck=dict(type='InvolutionFPN')),
    # involution in chosen stages of the stock ResNet through dcn=
    'dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py#dcn':
    dict(
        backbone=dict(
            init_cfg=None,
            dcn=dict(_delete_=True, type='Involution', window_size=7))),
}
SEGMENTATION = {
    'pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py':
    None,
    'deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py':
    None,
    'deeplabv3/deeplabv3_r101-d16-mg124_4xb2-40k_cityscapes-512x1024.py':
    None,
    'upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py':
    None,
    'sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py':
    None,
    # involution in stages 3 and 4 of the stock ResNetV1c through dcn=
    'pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py#dcn':
    dict(
        pretrained=None,
        backbone=dict(
            dcn=dict(type='Involution', window_size=7),
            stage_with_dcn=(False, False, True, True))),
}


def _config(tmp_path, base: str, model_edit) -> Config:
    """The stock ``base`` with ``model = model_edit`` in a user's file."""
    toolkit = 'mmseg' if base in SEGMENTATION else 'mmdet'
    path = tmp_path / 'user_config.py'
    path.write_text(f"_base_ = ['{toolkit}::{base.split('#')[0]}']\n" +
                    HEADER + f'model = {model_edit!r}\n')
    return Config.fromfile(str(path))


def _train_step_and_predict(model, packed, test_packed=None):
    torch.manual_seed(0)
    model.train()
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        return model(
            **model.data_preprocessor(test_packed or packed, False),
            mode='predict')


def _involution_count(model) -> int:
    return sum(isinstance(m, Involution) for m in model.modules())


@pytest.mark.parametrize('base', sorted(DETECTION))
def test_stock_detector_by_type_edit(tmp_path, base):
    cfg = _config(tmp_path, base, DETECTION[base])
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        packed = demo_mm_inputs(
            2, [[3, 128, 160], [3, 112, 128]],
            num_classes=80,
            with_mask='mask' in base)
        results = _train_step_and_predict(model, packed)
    assert len(results) == 2 and 'bboxes' in results[0].pred_instances
    if 'mask' in base:
        assert 'masks' in results[0].pred_instances
    edit = DETECTION[base]
    assert isinstance(model.backbone, RedNet) == (
        edit['backbone'].get('type') == 'RedNet')
    assert _involution_count(model) > 0
    for part in ('neck', 'rpn_head'):
        if part in edit:
            assert type(getattr(model, part)).__name__ == edit[part]['type']
    if 'roi_head' in edit:
        assert type(model.roi_head.mask_head).__name__ == \
            'InvolutionFCNMaskHead'
    if base.endswith('#dcn'):  # stages 2-4 (c3-c5): involution as conv2
        assert [type(model.backbone.layer1[0].conv2).__name__] + [
            type(getattr(model.backbone, f'layer{i}')[0].conv2).__name__
            for i in (2, 3, 4)
        ] == ['Conv2d'] + ['Involution'] * 3
        assert model.backbone.layer2[0].conv2.kernel_size == 7
    if 'gcb' in base:  # the plugin sits where it sits in ResNet
        assert hasattr(model.backbone.layer2[0], 'context_block')
        assert not hasattr(model.backbone.layer1[0], 'context_block')


@pytest.mark.parametrize('base', sorted(SEGMENTATION))
def test_stock_segmentor_by_type_edit(tmp_path, base):
    edit = SEGMENTATION[base] or dict(
        pretrained=None, backbone=dict(type='RedNet'))
    cfg = _config(tmp_path, base, edit)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        num_classes = model.decode_head.num_classes
        model.data_preprocessor.size = (97, 129)
        results = _train_step_and_predict(
            model, seg_batch([(89, 121), (97, 129)], num_classes),
            seg_batch([(75, 101)], num_classes, seed=1))
    assert results[0].pred_sem_seg.data.shape == (1, 75, 101)
    backbone = model.backbone
    if SEGMENTATION[base] is None:
        assert isinstance(backbone, RedNet)
        assert backbone.stem[1].kernel_size == 7
    assert _involution_count(model) > 0
    if '-d8_' in base and not base.endswith('#dcn'):
        # output stride 8, contract_dilation: half the dilation first
        assert [
            backbone.layer4[0].conv2.dilation,
            backbone.layer4[1].conv2.dilation
        ] == [2, 4]
    if 'mg124' in base:  # multi_grid: the last stage's dilations
        assert [block.conv2.dilation for block in backbone.layer4] == [1, 2, 4]
        assert [block.conv2.padding for block in backbone.layer4] == \
            [3, 6, 12]
    if base.endswith('#dcn'):
        assert type(backbone.layer2[0].conv2).__name__ == 'Conv2d'
        assert backbone.layer4[1].conv2.dilation == 4
        assert backbone.layer4[1].conv2.padding == 12


@pytest.mark.parametrize('base,checkpoint', [
    ('mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'torchvision://resnet50'),
    ('mask_rcnn/mask-rcnn_r50-caffe_fpn_1x_coco.py',
     'open-mmlab://detectron2/resnet50_caffe'),
])
def test_stock_resnet_checkpoint_is_refused_before_download(
        tmp_path, base, checkpoint, monkeypatch):
    import mmengine.runner.checkpoint as mmengine_checkpoint

    def no_download(*args, **kwargs):
        raise AssertionError('a download was attempted')

    monkeypatch.setattr(mmengine_checkpoint, 'load_from_http', no_download)
    cfg = _config(tmp_path, base, dict(backbone=dict(type='RedNet')))
    assert cfg.model.backbone.init_cfg.checkpoint == checkpoint
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(ValueError, match='not a RedNet checkpoint') as e:
            MODELS.build(cfg.model)
    assert 'init_cfg=None' in str(e.value)


def test_mmseg_segmentor_pretrained_resnet_is_refused(tmp_path):
    cfg = _config(tmp_path,
                  'pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
                  dict(backbone=dict(type='RedNet')))
    assert cfg.model.pretrained == 'open-mmlab://resnet50_v1c'
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(ValueError, match='model.pretrained=None'):
            MODELS.build(cfg.model)


def test_cfg_options_type_edit_equals_the_file_edit(tmp_path):
    """``--cfg-options model.backbone.type=RedNet ...`` on a stock config."""
    base = 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
    path = tmp_path / 'stock.py'
    path.write_text(f"_base_ = ['mmdet::{base}']\n" + HEADER)
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict({
        'model.backbone.type': 'RedNet',
        'model.backbone.init_cfg': None
    })
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, RedNet)
    assert model.backbone.frozen_stages == 1 and model.backbone.norm_eval
