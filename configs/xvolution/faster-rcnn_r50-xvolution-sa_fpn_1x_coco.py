# Faster R-CNN, ResNet-50 with X-volution (convolution + global multi-head
# self-attention, the paper's X-volution(SA)) in stage 3, conv FPN, COCO 1x.
# No published figure: the paper reports Mask R-CNN only (its X-volution(SA)
# Mask R-CNN: 41.1 box AP, +1.7 over the ResNet-50 baseline).
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py',
    './_base_/xvolution_r50_backbone.py'
]
model = dict(
    backbone=dict(
        _base_.xvolution_r50_backbone,
        xvolution=dict(type='XVolution', attention='sa')))
