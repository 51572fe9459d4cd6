# RedNet-50 on ImageNet-1k through mmpretrain, the reference recipe: batch
# 2048 (32 GPUs x 64), SGD with Nesterov momentum, lr 0.8, weight decay 1e-4,
# 130 epochs of cosine decay with 3130 iterations of linear warm-up, label
# smoothing 0.1; 224 px RandomResizedCrop and flip, tested on the 224 px centre
# crop of a 256 px short edge. The 3x3 stem involution of the published models,
# so PaddleClas's converted weights load whole (docs/rednet.md):
#     python tools/model_converters/paddleclas2mm.py \
#         RedNet50_pretrained.pdparams checkpoints/rednet50_in1k.pth
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    'mmpretrain::_base_/schedules/imagenet_bs2048_coslr.py',
    'mmpretrain::_base_/default_runtime.py', '../_base_/plugin.py'
]
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='RedNet',
        depth=50,
        stem_kernel_size=3,
        out_indices=(3, ),
        norm_eval=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))

# linear warm-up from 0.25 x lr over 3130 iterations, multiplied with a cosine
# over all 130 epochs (mmengine chains overlapping schedulers)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=3130),
    dict(
        type='CosineAnnealingLR',
        T_max=130,
        by_epoch=True,
        begin=0,
        end=130,
        convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=130, val_interval=1)
