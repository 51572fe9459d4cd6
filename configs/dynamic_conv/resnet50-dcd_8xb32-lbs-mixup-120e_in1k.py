# ResNet-50 with dynamic convolution decomposition (DCD, Li et al. ICLR
# 2021) as its authors built it (github liyunsheng13/dcd,
# models/imagenet/resnet_dcd.py: resnet50_dcd), on ImageNet-1k through
# mmpretrain. Their published resnet50_dcd.pth.tar converts into this
# model with tools/model_converters/dcd2mm.py (docs/dynamic_conv.md).
#
# Model: every conv of every Bottleneck (1x1, 3x3, 1x1) is a DCDConv2d with
# global pooling before the squeeze (L = floor(sqrt(C_in)), squeeze
# max(C_in, L^2) // 16); the 7x7 stem and the 1x1 shortcuts are plain; the
# classifier is the authors' dynamic one (DCDClsHead: L = 32, squeeze 32)
# after dropout 0.1.
#
# Recipe: the authors' README training command for ResNet-50: batch 256 (8
# GPUs x 32 here), SGD lr 0.1, momentum 0.9, weight decay 1e-4 on every
# parameter, 120 epochs with the lr divided by 10 at epochs 30, 60 and 90,
# label smoothing 0.1 (0.9 on the class, 0.1 / 999 on each other), mixup
# with alpha growing linearly from 0 to 0.2 over the first 100 epochs
# (MixupAlphaRampHook), dropout 0.1; 224 px RandomResizedCrop and flip,
# tested on the 224 px centre crop of a 256 px short edge (PIL resizing, as
# their torchvision pipeline). The BatchNorm of each block's last conv
# starts at 1 (zero_init_residual False), as theirs.
#
# Size at 224 px (tests/models/test_dcd_authors_models.py): 29,835,056
# parameters, exactly the authors' model's, and its multiply-adds.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py', '../_base_/plugin.py'
]
model = dict(
    backbone=dict(
        type='DCDResNet',
        dcd_cfg=dict(type='DCDConv2d', pool_size=1, squeeze_ratio=16),
        zero_init_residual=False),
    head=dict(
        type='DCDClsHead',
        dropout_ratio=0.1,
        # the authors' smoothing: 0.9 on the class, 0.1 / 999 on the others
        loss=dict(
            type='LabelSmoothLoss',
            label_smooth_val=0.1 * 1000 / 999,
            mode='original')),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)))

train_cfg = dict(max_epochs=120)

# the authors' mixup schedule: alpha grows from 0 to 0.2 over 100 epochs
custom_hooks = [dict(type='MixupAlphaRampHook', ramp_epochs=100)]
