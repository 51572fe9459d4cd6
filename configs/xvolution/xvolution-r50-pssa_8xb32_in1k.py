# ResNet-50 with X-volution (convolution + pixel-shift self-attention, PSSA)
# in place of every 3x3 conv of stage 3 (the six Bottlenecks' conv2, the
# first at stride 2), the paper's placement (stage 4 hurt), on ImageNet-1k
# through mmpretrain: its ImageClassifier with the project's XVolutionResNet
# (mmdet's ResNet-50, the same network as mmpretrain's) as the backbone.
# The paper reports +0.9% top-1 for ResNet-50 with X-volution in stage 3.
#
# Recipe: the paper's could not be read in any source here, so this is
# mmpretrain's standard ResNet-50 recipe
# (mmpretrain::resnet/resnet50_8xb32_in1k.py): batch 256 (8 GPUs x 32), SGD
# lr 0.1, momentum 0.9, weight decay 1e-4, 100 epochs with the lr divided by
# 10 at epochs 30, 60 and 90, cross-entropy; 224 px RandomResizedCrop and
# flip, tested on the 224 px centre crop of a 256 px short edge. Trained from
# scratch: every BatchNorm trains (norm_eval=False), the X-volutions' two
# branch norms included, and both branches start from their initialisation.
#
# Size at 224 px (tests/configs/test_imagenet_configs.py): 26.35 M
# parameters, 4.31 G multiply-adds (mmpretrain's ResNet-50: 25.56 M, 4.12 G):
# each X-volution adds W_q and W_k (1x1, 256 -> 256) and two BatchNorms.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py', '../_base_/plugin.py',
    './_base_/xvolution_r50_backbone.py'
]
model = dict(
    backbone=dict(
        _base_.xvolution_r50_backbone,
        norm_eval=False,
        xvolution=dict(type='XVolution', attention='pssa')))
