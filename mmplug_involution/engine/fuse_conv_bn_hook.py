"""Fold every BatchNorm into the conv before it, for testing."""
from mmcv.cnn import fuse_conv_bn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


@HOOKS.register_module()
class FuseConvBNHook(Hook):
    """Before testing, fold each BatchNorm into the conv it follows.

    mmcv's ``fuse_conv_bn``: in every module, a ``_BatchNorm`` child that
    follows an ``nn.Conv2d`` child (a ``ConvModule``'s conv and norm, a
    bottleneck's ``conv1``/``bn1``, a downsample's conv and BN) becomes
    part of that conv's weight and bias, and is replaced by ``nn.Identity``.
    Test-time outputs are unchanged up to rounding (eval-mode BN is an
    affine map); the network runs fewer passes over its activations. A BN
    after an involution (RedNet's ``bn2``) stays: an involution's kernel
    comes from its input, so no scale can move into it.

    Only before testing (``runner.test()``, e.g. ``tools/test.py
    --fuse-conv-bn``): the folded model cannot be trained or validated
    further.

    Example:
        >>> custom_hooks = [dict(type='FuseConvBNHook')]
    """

    priority = 'VERY_LOW'  # after the checkpoint is loaded

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        before = _count_norms(model)
        model.eval()  # some modules' train() returns None, not the module
        fuse_conv_bn(model)
        print_log(
            f'FuseConvBNHook: folded {before - _count_norms(model)} of '
            f'{before} BatchNorm layers into the convs before them.',
            logger='current')


def _count_norms(model) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())
