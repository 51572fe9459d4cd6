# Cascade Mask R-CNN with RedNet-50: the backbone drops into other detectors.
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/plugin.py', './_base_/rednet50_backbone.py'
]
model = dict(backbone=_base_.rednet50_backbone)
