# Mask R-CNN, ResNet-50 with DynamicConv (4 experts, softmax attention with
# temperature) in place of every 3x3 conv of stages 2-4 (c3-c5), conv FPN,
# COCO 1x. The torchvision ImageNet checkpoint's 3x3 weights load into every
# expert, so the network starts as that ResNet-50. The temperature anneals
# from 30 to 1 over the first epoch (our choice for fine-tuning; the paper
# anneals over its first ImageNet epochs). No published COCO figure.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/plugin.py'
]
model = dict(
    backbone=dict(
        dcn=dict(type='DynamicConv2d', num_experts=4),
        stage_with_dcn=(False, True, True, True)))
custom_hooks = [
    dict(type='DynamicConvTemperatureHook', start=30, end=1, duration=1)
]
