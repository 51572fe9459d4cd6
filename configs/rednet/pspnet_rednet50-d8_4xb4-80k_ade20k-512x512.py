# PSPNet, dilated RedNet-50 (output stride 8), ADE20K 512x512,
# 80k iterations, SyncBN. Not in the paper: mmseg's ResNet-50 recipe with
# RedNet-50.
_base_ = [
    'mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    '../_base_/plugin.py', './_base_/rednet50_backbone.py'
]
model = dict(pretrained=None, backbone=_base_.rednet50_d8_seg_backbone)
