# ResNet-50 with X-volution whose attention branch is an involution (one of
# the paper's three attention branches) in place of every 3x3 conv of stage
# 3, on ImageNet-1k through mmpretrain. It folds into one dynamic
# convolution for deployment, as PSSA does. No ImageNet figure of this form
# could be read. Recipe and training as in xvolution-r50-pssa_8xb32_in1k.py
# (mmpretrain's standard ResNet-50 recipe: the paper's could not be read in
# any source here).
# Size at 224 px: 25.72 M parameters, 4.15 G multiply-adds.
_base_ = ['./xvolution-r50-pssa_8xb32_in1k.py']
model = dict(
    backbone=dict(xvolution=dict(type='XVolution', attention='involution')))
