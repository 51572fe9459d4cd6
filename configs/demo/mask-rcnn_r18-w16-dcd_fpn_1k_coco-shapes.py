# The DCD detection demo: the X-volution demo's narrow Mask R-CNN (same
# data, schedule, FPN and heads) with mmdet's own ResNet-18 at a quarter of
# the width (base 16 channels) whose every conv, stem and shortcuts
# included, is a DCDConv2d (conv_cfg); trained from scratch on the generated
# COCO-format shapes dataset. Measured AP in docs/dynamic_conv.md.
_base_ = ['./mask-rcnn_xvolution-r18-w16-pssa_fpn_1k_coco-shapes.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        stem_channels=16,
        base_channels=16,
        conv_cfg=dict(type='DCDConv2d'),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None))
