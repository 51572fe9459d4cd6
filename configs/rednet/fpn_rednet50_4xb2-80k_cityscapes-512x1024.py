# Semantic FPN, RedNet-50 backbone, conv FPN, Cityscapes 512x1024, 80k
# iterations, SyncBN (reference table: 78.0 mIoU, 18.5M params).
_base_ = [
    'mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/plugin.py', './_base_/rednet50_backbone.py'
]
model = dict(pretrained=None, backbone=_base_.rednet50_seg_backbone)
