"""FuseConvBNHook: BN folded into the convs before testing, same outputs."""
from types import SimpleNamespace

import torch
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

import mmplug_involution  # noqa: F401  (registers the classes)
from mmplug_involution.models.backbones import RedNet


def _norms(model):
    return [
        name for name, m in model.named_modules() if isinstance(m, _BatchNorm)
    ]


def test_folds_every_conv_bn_pair_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = RedNet(depth=26, base_channels=16, out_indices=(0, 1, 2, 3))
    # trained-looking statistics, so that folding has something to fold
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    model = model.double().eval()
    x = torch.randn(2, 3, 61, 47, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    hook = HOOKS.build(dict(type='FuseConvBNHook'))
    hook.before_test(SimpleNamespace(model=model))
    remaining = _norms(model)
    # only the norms after an involution (bn2, the stem's) stay
    assert remaining and all(
        name.endswith('.bn2') or name == 'stem.2'
        for name in remaining), remaining
    with torch.no_grad():
        outputs = model(x)
    for out, wanted in zip(outputs, expected):
        torch.testing.assert_close(out, wanted, rtol=1e-10, atol=1e-10)
