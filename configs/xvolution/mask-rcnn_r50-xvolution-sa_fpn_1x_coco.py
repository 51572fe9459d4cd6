# Mask R-CNN, ResNet-50 with X-volution (convolution + global multi-head
# self-attention, the paper's X-volution(SA)) in stage 3, conv FPN, COCO 1x.
# Paper: 41.1 box AP / 37.2 mask AP, +1.7 / +1.5 over the ResNet-50
# baseline. Not deployable as one conv: `sa` stays two-branch.
_base_ = ['./mask-rcnn_r50-xvolution-pssa_fpn_1x_coco.py']
model = dict(backbone=dict(xvolution=dict(attention='sa')))
