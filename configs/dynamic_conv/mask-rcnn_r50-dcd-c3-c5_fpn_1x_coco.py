# Mask R-CNN, ResNet-50 with dynamic convolution decomposition (DCD,
# W(x) = Lambda(x) W0 + P Phi(x) Q^T) in place of every 3x3 conv of stages
# 2-4 (c3-c5, as mmdet's deformable-conv configs), conv FPN, COCO 1x.
# Everything else is mmdet's Mask R-CNN R-50: the torchvision ImageNet
# checkpoint's 3x3 weights load into each DCD's static kernel W0, and
# zero_init_dynamic (P = 0, Lambda = 1) makes the network start as that
# ImageNet ResNet-50. No published COCO figure (the paper reports ImageNet).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py'
]
model = dict(
    backbone=dict(
        dcn=dict(type='DCDConv2d', zero_init_dynamic=True),
        stage_with_dcn=(False, True, True, True)))
