# Faster R-CNN, ResNet-50 with X-volution whose attention branch is
# involution's kernel generator, in stage 3, conv FPN, COCO 1x. This
# project's variant: no published figure.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py',
    './_base_/xvolution_r50_backbone.py'
]
model = dict(
    backbone=dict(
        _base_.xvolution_r50_backbone,
        xvolution=dict(type='XVolution', attention='involution')))
