_base_ = ['./rednet50_in1k.py']
model = dict(backbone=dict(depth=152))
