# Faster R-CNN, ResNet-50 with X-volution (convolution + global multi-head
# self-attention, the paper's X-volution(SA)) in stage 3, conv FPN, COCO 1x.
# No published figure: the paper reports Mask R-CNN only (its X-volution(SA)
# Mask R-CNN: 41.1 box AP, +1.7 over the ResNet-50 baseline).
_base_ = ['./faster-rcnn_r50-xvolution-pssa_fpn_1x_coco.py']
model = dict(backbone=dict(xvolution=dict(attention='sa')))
