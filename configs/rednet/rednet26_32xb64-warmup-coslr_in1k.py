# RedNet-26 on ImageNet-1k: the RedNet-50 recipe with depth 26.
_base_ = ['./rednet50_32xb64-warmup-coslr_in1k.py']
model = dict(backbone=dict(depth=26))
