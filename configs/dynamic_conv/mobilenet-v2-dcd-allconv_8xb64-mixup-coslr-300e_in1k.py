# MobileNetV2 x1.0 with dynamic convolution decomposition (DCD, Li et al.
# ICLR 2021) in EVERY conv, on ImageNet-1k through mmpretrain: mmpretrain's
# MobileNetV2 with conv_cfg=dict(type='DCDConv2d') and its linear
# classifier. The authors' model is
# mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py.
#
# Placement: mmpretrain's MobileNetV2 hands conv_cfg to every conv, so every
# conv is a DCD: the 1x1 convs in the dense form (L = floor(sqrt(C_in)),
# C_in / 16 squeeze), the 17 depthwise 3x3 in the depthwise form (4 latent
# kernel elements), the stem and the last 1x1 conv included. The authors
# make only the t = 6 blocks' 1x1 convs dynamic, with their own latent
# sizes, and their classifier too.
#
# Recipe: the authors' MobileNetV2 x1.0 command, as in their model's
# config, without its dropout (mmpretrain's LinearClsHead has none).
#
# Size at 224 px (tests/configs/test_imagenet_configs.py): 5.17 M
# parameters, 0.381 G multiply-adds (mmpretrain's MobileNetV2: 3.50 M,
# 0.319 G).
_base_ = ['./mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        widen_factor=1.0,
        conv_cfg=dict(type='DCDConv2d')),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1280,
        loss=dict(
            type='LabelSmoothLoss',
            label_smooth_val=0.1 * 1000 / 999,
            mode='original'),
        topk=(1, 5)))
