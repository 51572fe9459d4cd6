# ResNet-50 with X-volution(SA), convolution + global multi-head
# self-attention (16 heads over the 14x14 positions of stage 3), in place of
# every 3x3 conv of stage 3, on ImageNet-1k through mmpretrain. It stays
# two-branch in deployment. No ImageNet figure of this form could be read
# (the paper's SA figures quoted in docs/xvolution.md are COCO's). Recipe
# and training as in xvolution-r50-pssa_8xb32_in1k.py (mmpretrain's standard
# ResNet-50 recipe: the paper's could not be read in any source here).
# Size at 224 px: 26.74 M parameters, 4.60 G multiply-adds (of which
# model_complexity counts 4.42 G: not the 0.18 G of the attention products).
_base_ = ['./xvolution-r50-pssa_8xb32_in1k.py']
model = dict(backbone=dict(xvolution=dict(type='XVolution', attention='sa')))
