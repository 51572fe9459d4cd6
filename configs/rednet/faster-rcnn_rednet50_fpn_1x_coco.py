# Faster R-CNN, RedNet-50 backbone, conv FPN, COCO 1x (reference table:
# 39.5 box AP). The backbone starts from the ImageNet RedNet-50 checkpoint in
# mmcls format (see docs/rednet.md; its 3x3 stem head is re-initialised for
# the 7x7 stem, as in the reference, with one warning).
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/plugin.py'
]
pretrained = 'checkpoints/rednet50_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='RedNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
