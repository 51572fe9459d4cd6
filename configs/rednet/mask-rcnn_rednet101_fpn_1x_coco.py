# Mask R-CNN with RedNet-101: the backbone drops into the detector unchanged.
_base_ = ['./mask-rcnn_rednet50_fpn_1x_coco.py']
pretrained = 'checkpoints/rednet101_in1k.pth'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
