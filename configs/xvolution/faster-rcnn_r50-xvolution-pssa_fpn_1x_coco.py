# Faster R-CNN, ResNet-50 with X-volution (convolution + pixel-shift
# self-attention, PSSA; the deployable variant) in stage 3, conv FPN, COCO
# 1x. No published figure: the paper reports Mask R-CNN only, and PSSA there
# as comparable to SA (41.1 box AP) without a separate number.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py',
    './_base_/xvolution_r50_backbone.py'
]
model = dict(
    backbone=dict(
        _base_.xvolution_r50_backbone,
        # attention branches start at zero weight: the network starts as
        # the ImageNet ResNet-50 its conv branches are loaded from
        xvolution=dict(
            type='XVolution', attention='pssa', zero_init_attention=True)))
