# The project's detection demo: a narrow Mask R-CNN with involution in the
# backbone (RedNet-26, base width 16), the FPN, the RPN head and the mask
# head, trained from scratch on the generated COCO-format shapes dataset
# (tools/data/generate_shapes.py coco) in 6-8 minutes on 2 CPU cores
# (docs/detection.md).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py', '../_base_/plugin.py'
]

data_root = 'data/coco_shapes/'
metainfo = dict(
    classes=('circle', 'rectangle', 'triangle', 'star', 'ellipse', 'ring'))
# the 256x256 images at 224x224: 3/4 of the pixels to train on
image_size = (224, 224)
fpn_channels = 64

model = dict(
    backbone=dict(
        _delete_=True,
        type='RedNet',
        depth=26,
        stem_channels=32,
        base_channels=16,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        type='InvolutionFPN',
        in_channels=[64, 128, 256, 512],
        out_channels=fpn_channels,
        num_outs=5),
    rpn_head=dict(
        type='InvolutionRPNHead',
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        anchor_generator=dict(scales=[4], ratios=[0.5, 1.0, 2.0])),
    roi_head=dict(
        # one sample per bin instead of adaptive: mmcv's CPU RoIAlign
        # (forward and backward, single-threaded) was a quarter of an
        # iteration; the shapes' RoIs span few feature pixels a bin
        bbox_roi_extractor=dict(
            out_channels=fpn_channels, roi_layer=dict(sampling_ratio=1)),
        bbox_head=dict(
            in_channels=fpn_channels, fc_out_channels=256, num_classes=6),
        mask_roi_extractor=dict(
            out_channels=fpn_channels, roi_layer=dict(sampling_ratio=1)),
        mask_head=dict(
            type='InvolutionFCNMaskHead',
            num_convs=2,
            in_channels=fpn_channels,
            conv_out_channels=fpn_channels,
            num_classes=6)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        # 64 RoIs (at most 16 positives) an image: the shapes images hold
        # about 4 objects, and the mask branch's cost grows with positives
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_iters = 1000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=100,
        end=max_iters,
        eta_min_ratio=0.01)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=5, norm_type=2))
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=4)
# a fixed seed: on one machine a re-run repeats the run bit for bit
randomness = dict(seed=0)
