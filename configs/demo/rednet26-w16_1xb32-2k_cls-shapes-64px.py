# The project's classification demo: a narrow RedNet-26 (base width 16, the
# 3x3 stem involution of the published models) with a global average pool and
# a linear head, trained from scratch through mmpretrain on the generated
# one-shape-an-image dataset (`python tools/data/generate_shapes.py cls
# data/cls_shapes`: 1800 train and 300 val images of 64x64, six balanced
# classes, chance 1/6) on 2 CPU cores in about 3.5 minutes (0.11 s an
# iteration on an idle machine; `bash tools/dev/run_demo.sh cls` took 4.5
# minutes with the data and the test, top-1 71.7 %); evaluated with
# mmpretrain's top-1 Accuracy.
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/plugin.py']

data_root = 'data/cls_shapes/'
# the labels of the generated lists: the class folders in alphabetical order
metainfo = dict(
    classes=('circle', 'ellipse', 'rectangle', 'ring', 'star', 'triangle'))

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=len(metainfo['classes']),
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='RedNet',
        depth=26,
        stem_channels=32,
        base_channels=16,
        stem_kernel_size=3,
        out_indices=(3, ),
        norm_eval=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=len(metainfo['classes']),
        in_channels=512,  # 4 x 16 x 2**3
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

# the shapes keep their class when mirrored either way
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomFlip',
        prob=[0.25, 0.25],
        direction=['horizontal', 'vertical']),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(type='CustomDataset', data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset,
        ann_file='meta/train.txt',
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        ann_file='meta/val.txt',
        data_prefix='val',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# six classes: top-5 would be all but certain
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_iters = 2000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters,
        eta_min_ratio=0.01)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=5, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    # a few minutes of training: one checkpoint, at the end
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
    # tools/test.py --show-dir turns it on; 4x up-scaled, to read the labels
    visualization=dict(type='VisualizationHook', enable=False, resize=256))
log_processor = dict(by_epoch=False)
# a fixed seed: on one machine a re-run repeats the run bit for bit
randomness = dict(seed=0)
