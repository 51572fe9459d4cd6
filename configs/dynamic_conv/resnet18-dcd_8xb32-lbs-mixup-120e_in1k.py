# ResNet-18 with dynamic convolution decomposition (DCD, Li et al. ICLR
# 2021) as its authors built it (github liyunsheng13/dcd,
# models/imagenet/resnet_dcd.py: resnet18_dcd), on ImageNet-1k through
# mmpretrain.
#
# Model: both 3x3 convs of every BasicBlock are DCDConv2d layers that pool
# the input to 2x2 before the squeeze (4 * C_in features, L = floor(sqrt(4 *
# C_in)), squeeze max(4 * C_in, L^2) // 16); the 7x7 stem and the 1x1
# shortcuts are plain; the classifier is the authors' dynamic one
# (DCDClsHead) after dropout 0.1.
#
# Recipe: the authors publish none for ResNet-18 (nor weights); this is
# their ResNet-50 command (resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py, with
# its differences from their main.py).
#
# Size at 224 px (tests/models/test_dcd_authors_models.py): 14,703,332
# parameters, exactly the authors' model's, and its multiply-adds.
_base_ = ['./resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py']
model = dict(
    backbone=dict(depth=18, dcd_cfg=dict(pool_size=2)),
    head=dict(in_channels=512))
