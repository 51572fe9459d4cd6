# Mask R-CNN, ResNet-50 with CondConv (8 experts, sigmoid routing) in place
# of every 3x3 conv of stages 2-4 (c3-c5, as mmdet's deformable-conv
# configs), conv FPN, COCO 1x. The torchvision ImageNet checkpoint's 3x3
# weights load into every expert (scaled by 2 / E, so the mixture starts
# near the ImageNet kernel while the routing sigmoids sit near 1/2).
# No published COCO figure (the paper reports ImageNet and SSD detection).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py'
]
model = dict(
    backbone=dict(
        dcn=dict(type='CondConv2d', num_experts=8),
        stage_with_dcn=(False, True, True, True)))
