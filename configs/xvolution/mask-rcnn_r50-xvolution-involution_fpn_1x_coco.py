# Mask R-CNN, ResNet-50 with X-volution whose attention branch is
# involution's kernel generator, in stage 3, conv FPN, COCO 1x. This
# project's variant: no published figure.
_base_ = ['./mask-rcnn_r50-xvolution-pssa_fpn_1x_coco.py']
model = dict(backbone=dict(xvolution=dict(attention='involution')))
