# The X-volution detection demo: a narrow Mask R-CNN whose backbone is a
# ResNet-18 at a quarter of the width (base 16 channels) with X-volution
# (convolution + pixel-shift self-attention) in stage 3, and the plain conv
# FPN, RPN head and mask head; trained from scratch on the generated
# COCO-format shapes dataset like the involution demo it inherits (same data,
# schedule, head sizes). Measured AP in docs/xvolution.md.
_base_ = ['./mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='XVolutionResNet',
        depth=18,
        stem_channels=16,
        base_channels=16,
        xvolution=dict(type='XVolution', attention='pssa'),
        stage_with_xvolution=(False, False, True, False),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(type='FPN', in_channels=[16, 32, 64, 128]),
    rpn_head=dict(type='RPNHead'),
    roi_head=dict(mask_head=dict(type='FCNMaskHead')))
