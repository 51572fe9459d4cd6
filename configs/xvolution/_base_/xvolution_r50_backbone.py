# ResNet-50 with X-volution in place of every 3x3 conv of stage 3 (the six
# Bottlenecks' conv2; XVolutionResNet's default placement). Merged into
# mmdet's ResNet-50 backbone config, so everything else is mmdet's: frozen
# first stage, frozen BN statistics (the X-volutions' own BNs included) and
# the torchvision ImageNet checkpoint, whose plain 3x3 weights initialise the
# X-volutions' conv branches (their attention branches and norms start
# fresh). Configs use `backbone=dict(_base_.xvolution_r50_backbone,
# xvolution=dict(type='XVolution', attention=...))`.
xvolution_r50_backbone = dict(
    type='XVolutionResNet', stage_with_xvolution=(False, False, True, False))
