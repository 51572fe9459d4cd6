# UPerNet, RedNet-50 backbone, Cityscapes 512x1024, 80k iterations, SyncBN
# (reference table: 80.6 mIoU, 56.4M params).
_base_ = [
    'mmseg::upernet/upernet_r50_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/plugin.py', './_base_/rednet50_backbone.py'
]
model = dict(pretrained=None, backbone=_base_.rednet50_seg_backbone)
