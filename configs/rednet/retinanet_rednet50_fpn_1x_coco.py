# RetinaNet, RedNet-50 backbone, conv FPN, COCO 1x (reference: 38.2 box AP).
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/plugin.py'
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
