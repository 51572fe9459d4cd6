# ResNet-18 with dynamic convolution decomposition (DCD, Li et al. ICLR 2021)
# in EVERY conv, on ImageNet-1k through mmpretrain: mmpretrain's ResNet-18
# with conv_cfg=dict(type='DCDConv2d'), the dense form W(x) = Lambda(x) W0 +
# P Phi(x) Q^T with L = floor(sqrt(C_in)) and a C_in / 16 squeeze.
#
# Placement: mmpretrain's ResNet hands conv_cfg to every conv, so the 7x7
# stem and the three 1x1 shortcut convs are DCDs too, beside both 3x3 convs
# of every BasicBlock; the classifier is mmpretrain's linear one. The
# authors' ResNet-18 (resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py) keeps the
# stem and shortcuts static, pools to 2x2 before each squeeze and has a
# dynamic classifier: 14.70 M parameters.
#
# Recipe: mmpretrain's standard ResNet-18 recipe
# (mmpretrain::resnet/resnet18_8xb32_in1k.py): batch 256 (8 GPUs x 32), SGD
# lr 0.1, momentum 0.9, weight decay 1e-4, 100 epochs with the lr
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
