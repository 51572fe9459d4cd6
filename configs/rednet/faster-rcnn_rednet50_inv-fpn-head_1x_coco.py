# Faster R-CNN, RedNet-50, involution FPN and RPN head (reference: 39.2 box
# AP).
_base_ = ['./faster-rcnn_rednet50_inv-fpn_1x_coco.py']
model = dict(rpn_head=dict(type='InvolutionRPNHead'))
