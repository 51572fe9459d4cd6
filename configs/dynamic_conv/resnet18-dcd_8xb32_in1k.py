# ResNet-18 with dynamic convolution decomposition (DCD, Li et al. ICLR 2021)
# on ImageNet-1k through mmpretrain: mmpretrain's ResNet-18 with
# conv_cfg=dict(type='DCDConv2d'), the dense form W(x) = Lambda(x) W0 +
# P Phi(x) Q^T with L = floor(sqrt(C_in)) and a C_in / 16 squeeze.
#
# Placement: the authors' ResNet-18 (liyunsheng13/dcd,
# models/imagenet/resnet_dcd.py) makes both 3x3 convs of every BasicBlock
# dynamic, as here, and keeps the 7x7 stem and the three 1x1 shortcut convs
# static; mmpretrain's ResNet hands conv_cfg to every conv, so those four are
# DCDs here too (0.04 M parameters, 4 M multiply-adds). Their model differs
# further: its ResNet-18 DCDs pool the input to 2x2 (a squeeze from 4*C_in
# features, L = floor(sqrt(4*C_in))) and its classifier is a DCD as well;
# counted from their code it has 14.70 M parameters. Reaching it needs a
# backbone option that keeps the stem and shortcuts static, a 2x2-pooling
# option in DCDConv2d and a DCD classifier head.
#
# Recipe: the authors publish none for ResNet-18 (their README trains
# ResNet-50: 120 epochs, lr 0.1 divided by 10 at 30/60/90, label smoothing
# 0.1, dropout 0.1, mixup 0.2), so this is mmpretrain's standard ResNet-18
# recipe (mmpretrain::resnet/resnet18_8xb32_in1k.py): batch 256 (8 GPUs x
# 32), SGD lr 0.1, momentum 0.9, weight decay 1e-4, 100 epochs with the lr
# divided by 10 at epochs 30, 60 and 90, cross-entropy; 224 px
# RandomResizedCrop and flip, tested on the 224 px centre crop of a 256 px
# short edge.
#
# Size at 224 px (tests/configs/test_imagenet_configs.py): 12.07 M
# parameters, 1.86 G multiply-adds (mmpretrain's ResNet-18: 11.69 M, 1.82 G).
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py', '../_base_/plugin.py'
]
model = dict(backbone=dict(conv_cfg=dict(type='DCDConv2d')))
