# Mask R-CNN, RedNet-50, involution FPN (reference: 40.8 / 36.4).
_base_ = [
    './mask-rcnn_rednet50_fpn_1x_coco.py', './_base_/involution_schedule.py'
]
model = dict(neck=dict(type='InvolutionFPN'))
param_scheduler = _base_.involution_param_scheduler
optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
