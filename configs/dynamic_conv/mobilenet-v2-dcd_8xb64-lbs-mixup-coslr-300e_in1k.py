# MobileNetV2 x1.0 with dynamic convolution decomposition (DCD, Li et al.
# ICLR 2021) as its authors built it (github liyunsheng13/dcd,
# models/imagenet/mobilenetv2_dcd.py: mobilenetv2_dcd with
# --fc-squeeze 16), on ImageNet-1k through mmpretrain. Their published
# mv2x1.0_dcd.pth.tar converts into this model with
# tools/model_converters/dcd2mm.py (docs/dynamic_conv.md).
#
# Model (DCDMobileNetV2): the 1x1 expansion and projection of the sixteen
# t = 6 blocks are DCDConv2d layers with the authors' sizes (the expansions
# squeeze the input pooled to 2x2, the projections its global average;
# latent sizes 8 to 40; squeeze width max(F, L^2) // 16); the stem, the
# depthwise convs, the first block and the last 1x1 conv are plain; the
# classifier is the authors' dynamic one (DCDClsHead) after dropout 0.2.
#
# Recipe: the authors' README training command for MobileNetV2 x1.0: batch
# 512 (8 GPUs x 64 here), SGD lr 0.1, momentum 0.9, weight decay 2e-5 on
# every parameter, 300 epochs of cosine decay to 0 (per iteration, no
# warm-up), label smoothing 0.1 (0.9 on the class, 0.1 / 999 on each
# other), mixup with alpha growing linearly from 0 to 0.2 over the first 100
# epochs (MixupAlphaRampHook), dropout 0.2; 224 px RandomResizedCrop and
# flip, tested on the 224 px centre crop of a 256 px short edge (PIL
# resizing, as torchvision's).
#
# Size at 224 px (tests/models/test_dcd_authors_models.py): 5,720,028
# parameters, exactly the authors' model's, and its multiply-adds.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/default_runtime.py', '../_base_/plugin.py'
]
model = dict(
    backbone=dict(
        type='DCDMobileNetV2',
        dcd_cfg=dict(type='DCDConv2d', squeeze_ratio=16),
        expand_pool_size=2),
    head=dict(
        type='DCDClsHead',
        dropout_ratio=0.2,
        # the authors' smoothing: 0.9 on the class, 0.1 / 999 on the others
        loss=dict(
            type='LabelSmoothLoss',
            label_smooth_val=0.1 * 1000 / 999,
            mode='original')),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)))

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = dict(batch_size=64)

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=2e-5))
param_scheduler = dict(
    type='CosineAnnealingLR',
    T_max=300,
    by_epoch=True,
    begin=0,
    end=300,
    convert_to_iter_based=True)
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)

# the authors' mixup schedule: alpha grows from 0 to 0.2 over 100 epochs
custom_hooks = [dict(type='MixupAlphaRampHook', ramp_epochs=100)]
