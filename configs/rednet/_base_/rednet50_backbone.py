# RedNet-50 as a detection backbone, as in the reference detectors: ImageNet
# checkpoint in mmcls format (see docs/rednet.md; its 3x3 stem head is
# re-initialised for the 7x7 stem, with one warning), first stage frozen, BN
# statistics frozen. Configs use it as `backbone=_base_.rednet50_backbone`.
rednet50_pretrained = 'checkpoints/rednet50_in1k.pth'
rednet50_backbone = dict(
    _delete_=True,
    type='RedNet',
    depth=50,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    init_cfg=dict(
        type='Pretrained', checkpoint=rednet50_pretrained,
        prefix='backbone.'))
