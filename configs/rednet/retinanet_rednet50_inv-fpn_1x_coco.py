# RetinaNet, RedNet-50, involution FPN (reference: 38.2 box AP); P6/P7 stay
# convs. 2000 warm-up iterations and gradient clipping at 40, as published.
_base_ = [
    './retinanet_rednet50_fpn_1x_coco.py', './_base_/involution_schedule.py'
]
model = dict(neck=dict(type='InvolutionFPN'))
param_scheduler = _base_.involution_param_scheduler
optim_wrapper = dict(clip_grad=dict(max_norm=40, norm_type=2))
