# The reference recipe for detectors with involution in the neck or heads:
# 2000 linear warm-up iterations (then mmdet's 1x steps) and gradient
# clipping (max_norm 5 for two-stage detectors, 40 for RetinaNet). Configs
# use `param_scheduler = _base_.involution_param_scheduler`.
involution_param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=2000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
