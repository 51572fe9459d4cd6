# DeepLabV3+, dilated RedNet-50 (output stride 8), Cityscapes 512x1024,
# 80k iterations, SyncBN. Not in the paper: mmseg's ResNet-50 recipe with
# RedNet-50.
_base_ = [
    'mmseg::deeplabv3plus/'
    'deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/plugin.py', './_base_/rednet50_backbone.py'
]
model = dict(pretrained=None, backbone=_base_.rednet50_d8_seg_backbone)
