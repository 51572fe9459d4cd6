# Mask R-CNN R-50 FPN 1x on COCO with the DCD authors' ResNet-50 as the
# backbone: DCD in every conv of every Bottleneck (DCDResNet, the backbone
# of resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py), initialised from their
# published ImageNet weights once converted (docs/dynamic_conv.md):
#
#   python tools/model_converters/dcd2mm.py resnet50_dcd.pth.tar \
#       checkpoints/resnet50-dcd_in1k.pth
#
# Everything else is mmdet's Mask R-CNN R-50 recipe (its BatchNorms, those
# inside each DCD included, frozen at their ImageNet statistics by
# norm_eval; the stem and the first stage frozen). DCDResNet is mmpretrain's
# ResNet: the `cls` extra (mmpretrain) is needed beside `det`. No published
# COCO figure (the paper reports ImageNet).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py'
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='DCDResNet',
        depth=50,
        dcd_cfg=dict(type='DCDConv2d'),
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet50-dcd_in1k.pth',
            prefix='backbone.')))
