# RedNet-50 as a detection backbone, as in the reference detectors: ImageNet
# checkpoint in mmcls format (see docs/rednet.md; its 3x3 stem head is
# re-initialised for the 7x7 stem, with one warning), first stage frozen, BN
# statistics frozen. Configs use it as `backbone=_base_.rednet50_backbone`;
# it merges into the toolkit base's ResNet backbone (RedNet takes every
# ResNet argument), replacing its type and its ResNet checkpoint.
rednet50_pretrained = 'checkpoints/rednet50_in1k.pth'
rednet50_backbone = dict(
    type='RedNet',
    depth=50,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    init_cfg=dict(
        type='Pretrained', checkpoint=rednet50_pretrained, prefix='backbone.'))

# RedNet-50 as a segmentation backbone, as in the reference segmentors: the
# same checkpoint, SyncBN trained (not frozen), no frozen stage. Configs use
# `backbone=_base_.rednet50_seg_backbone` (output stride 32, for FPN and
# UPerNet) or `_base_.rednet50_d8_seg_backbone` (stages 3 and 4 dilated 2 and
# 4 instead of strided: output stride 8, for PSPNet and DeepLabV3+; the
# first block of a dilated stage uses half the dilation, as in mmseg's
# ResNetV1c), and set `pretrained=None` on the segmentor (mmseg's bases name
# a ResNet checkpoint there).
rednet50_seg_backbone = dict(
    rednet50_backbone,
    frozen_stages=-1,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    norm_eval=False)
rednet50_d8_seg_backbone = dict(
    rednet50_seg_backbone,
    strides=(1, 2, 1, 1),
    dilations=(1, 1, 2, 4),
    contract_dilation=True)
