# Mask R-CNN, RedNet-50, involution FPN, RPN head and mask head (reference:
# 39.6 / 35.1).
_base_ = ['./mask-rcnn_rednet50_inv-fpn_1x_coco.py']
model = dict(
    rpn_head=dict(type='InvolutionRPNHead'),
    roi_head=dict(mask_head=dict(type='InvolutionFCNMaskHead')))
