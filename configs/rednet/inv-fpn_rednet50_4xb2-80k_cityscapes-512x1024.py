# Semantic FPN, RedNet-50 backbone, involution FPN (the four 3x3 output convs
# are 7x7 involutions), Cityscapes 512x1024, 80k iterations, SyncBN
# (reference table: 79.1 mIoU, 16.4M params).
_base_ = ['./fpn_rednet50_4xb2-80k_cityscapes-512x1024.py']
model = dict(neck=dict(type='InvolutionFPN'))
