# MobileNetV2 x0.5 with dynamic convolution decomposition (DCD, Li et al.
# ICLR 2021) as its authors built it (github liyunsheng13/dcd,
# models/imagenet/mobilenetv2_dcd.py: mobilenetv2_dcd with --width-mult 0.5
# and the code's default fc_squeeze 8), on ImageNet-1k through mmpretrain.
# The paper reports this model at 3.1 M parameters and 70.2% top-1.
#
# Model: as mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py at half
# width, with the squeeze width max(F, L^2) // 8.
#
# Recipe: the authors publish no command (nor weights) for x0.5; this is
# their x1.0 command (that config, with its differences from their main.py).
#
# Size at 224 px (tests/models/test_dcd_authors_models.py): 3,056,616
# parameters, exactly the authors' model's, and its multiply-adds.
_base_ = ['./mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py']
model = dict(backbone=dict(widen_factor=0.5, dcd_cfg=dict(squeeze_ratio=8)))
