# The project's segmentation demo: a narrow Semantic FPN with involution in
# the backbone (RedNet-26, base width 16) and in the FPN, trained from
# scratch on the generated shapes dataset (`python tools/data/
# generate_shapes.py seg data/seg_shapes`) on 2 CPU cores in about 20
# minutes; evaluated with mmseg's IoUMetric. Labels: 0 background, 1-6
# shapes, 255 ignored. The 256x256 images are used at half size (128x128
# crops), which gives 2.5x more training per minute than the full size.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/plugin.py'
]

data_root = 'data/seg_shapes/'
metainfo = dict(
    classes=('background', 'circle', 'rectangle', 'triangle', 'star',
             'ellipse', 'ring'),
    palette=[(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200),
             (255, 225, 25), (240, 50, 230), (70, 240, 240)])
crop_size = (128, 128)
fpn_channels = 64
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='RedNet',
        depth=26,
        stem_channels=32,
        base_channels=16,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        type='InvolutionFPN',
        in_channels=[64, 128, 256, 512],
        out_channels=fpn_channels,
        num_outs=4),
    decode_head=dict(
        in_channels=[fpn_channels] * 4,
        channels=fpn_channels,
        num_classes=len(metainfo['classes']),
        norm_cfg=norm_cfg,
        # Dice beside cross-entropy: the shapes cover 14% of the pixels
        loss_decode=[
            dict(type='CrossEntropyLoss', loss_weight=1.0),
            dict(type='DiceLoss', use_sigmoid=False, loss_weight=1.0)
        ]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=crop_size,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.png',
    seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 1500
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=1e-5,
        by_epoch=False,
        begin=50,
        end=max_iters)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=5, norm_type=2))
# mmseg keeps its default hooks in the schedule bases, not inherited here
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=300, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# a fixed seed: on one machine a re-run repeats the run bit for bit
randomness = dict(seed=0)
