# RedNet-50 ImageNet classifier (backbone + global pool + 1000-class linear
# head) in the published layout: 3x3 stem involution. Used for complexity
# (tools/analysis/get_complexity.py) and to load the published checkpoints.
_base_ = ['../_base_/plugin.py']
model = dict(
    type='GlobalPoolClassifier',
    backbone=dict(
        type='RedNet',
        depth=50,
        stem_kernel_size=3,
        out_indices=(3, ),
        norm_eval=False),
    num_classes=1000)
