# Mask R-CNN, RedNet-50 backbone, conv FPN, COCO 1x (reference table:
# 39.9 box AP / 35.7 mask AP).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py',
    './_base_/rednet50_backbone.py'
]
model = dict(backbone=_base_.rednet50_backbone)
