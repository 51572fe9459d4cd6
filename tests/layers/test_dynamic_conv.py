"""CondConv2d, DynamicConv2d, DCDConv2d and the temperature hook."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.logging import MessageHub
from mmengine.registry import MODELS, DefaultScope

from mmplug_involution.engine import DynamicConvTemperatureHook
from mmplug_involution.layers import CondConv2d, DCDConv2d, DynamicConv2d

LAYERS = (CondConv2d, DynamicConv2d, DCDConv2d)
CASES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=1, stride=2, padding=0),
]


def run_alone(layer, x):
    return torch.cat([layer(x[i:i + 1]) for i in range(x.shape[0])])


@pytest.mark.parametrize('cls', LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_shape_matches_conv2d_and_batch_independence_in_eval(cls, case):
    torch.manual_seed(0)
    layer = cls(12, 20, **case).eval()
    x = torch.randn(4, 12, 11, 14)
    reference = F.conv2d(
        x, torch.zeros(20, 12, case['kernel_size'], case['kernel_size']),
        None, case['stride'], case['padding'], case.get('dilation', 1))
    with torch.no_grad():
        out = layer(x)
        torch.testing.assert_close(out, run_alone(layer, x))
    assert out.shape == reference.shape


@pytest.mark.parametrize('cls', (CondConv2d, DynamicConv2d),
                         ids=lambda c: c.__name__)
def test_mixtures_are_batch_independent_in_training_too(cls):
    torch.manual_seed(0)
    layer = cls(8, 8, 3, padding=1, groups=2).train()
    x = torch.randn(5, 8, 7, 9)
    torch.testing.assert_close(layer(x), run_alone(layer, x))


@pytest.mark.parametrize('cls', (CondConv2d, DynamicConv2d),
                         ids=lambda c: c.__name__)
def test_mixture_equals_conv_with_the_mixed_kernel(cls):
    torch.manual_seed(0)
    layer = cls(6, 4, 3, stride=2, padding=1).eval()
    x = torch.randn(2, 6, 9, 8)
    with torch.no_grad():
        alpha = layer.routing(x.mean((2, 3)))
        for i in range(2):
            weight = torch.einsum('e,eoikl->oikl', alpha[i], layer.weight)
            bias = alpha[i] @ layer.bias
            expected = F.conv2d(x[i:i + 1], weight, bias, 2, 1)
            torch.testing.assert_close(layer(x[i:i + 1]), expected)


def test_routing_functions():
    torch.manual_seed(0)
    cond = CondConv2d(8, 8, 1, num_experts=5)
    alpha = cond.routing(torch.randn(3, 8))
    assert alpha.shape == (3, 5) and ((alpha > 0) & (alpha < 1)).all()
    dynamic = DynamicConv2d(8, 8, 1, num_experts=4, temperature=30.)
    pooled = torch.randn(3, 8)
    hot = dynamic.routing(pooled)
    torch.testing.assert_close(hot.sum(1), torch.ones(3))
    dynamic.temperature = 1.
    cold = dynamic.routing(pooled)
    # a high temperature flattens the attention
    assert (hot.max(1).values < cold.max(1).values).all()


@pytest.mark.parametrize('cls', LAYERS, ids=lambda c: c.__name__)
def test_gradcheck_and_every_parameter_learns(cls):
    torch.manual_seed(0)
    layer = cls(4, 6, 3, stride=2, padding=1).double().train()
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x, ), fast_mode=True)
    layer(x).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_dcd_with_dynamic_parts_zeroed_is_its_static_conv():
    torch.manual_seed(0)
    layer = DCDConv2d(16, 24, 3, stride=2, padding=1).eval()
    with torch.no_grad():
        layer.p.weight.zero_()  # P = 0: no dynamic residual
        layer.scale.weight.zero_()  # Lambda = hsig(0) = 1
        layer.scale.bias.zero_()
        layer.bias.uniform_()
        x = torch.randn(2, 16, 13, 10)
        expected = F.conv2d(x, layer.static.weight, layer.bias, 2, 1)
        torch.testing.assert_close(layer(x), expected)


def test_dcd_parameter_count_follows_the_formula():
    c_in, c_out, k = 64, 128, 3
    layer = DCDConv2d(c_in, c_out, k, padding=1, bias=False)
    latent = math.isqrt(c_in)  # 8
    squeeze = max(c_in, latent**2) // 16  # 4
    expected = (c_out * c_in * k * k  # W0
                + c_in * latent + latent * c_out  # Q, P
                + c_in * squeeze + squeeze * squeeze + squeeze  # squeeze, SE
                + squeeze * latent**2 + latent**2  # Phi
                + squeeze * c_out + c_out  # Lambda
                + 2 * latent + 2 * latent)  # the two BatchNorms
    assert sum(p.numel() for p in layer.parameters()) == expected
    # the paper's count of the dynamic part, about 2CL + (2C + L^2) C / r,
    # is far below a 4-expert mixture's 3 extra kernels
    dynamic = expected - c_out * c_in * k * k
    assert dynamic < 3 * c_out * c_in * k * k / 10


def test_mixture_parameter_counts():
    cond = CondConv2d(16, 32, 3, num_experts=8)
    assert sum(p.numel() for p in cond.parameters()) == \
        8 * (32 * 16 * 9 + 32) + 16 * 8 + 8
    dynamic = DynamicConv2d(16, 32, 3, num_experts=4, reduction=4)
    assert sum(p.numel() for p in dynamic.parameters()) == \
        4 * (32 * 16 * 9 + 32) + (16 * 4 + 4) + (4 * 4 + 4)


@pytest.mark.parametrize('kwargs,match', [
    (dict(cls=CondConv2d, groups=3), 'groups=3 must divide'),
    (dict(cls=CondConv2d, num_experts=0), 'num_experts must be >= 1'),
    (dict(cls=DCDConv2d, groups=2), 'dense'),
    (dict(cls=DCDConv2d, padding=0), 'padding must be'),
])
def test_bad_arguments(kwargs, match):
    cls = kwargs.pop('cls')
    args = dict(in_channels=8, out_channels=8, kernel_size=3, padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cls(**args)


@pytest.mark.parametrize('conv_type', ['CondConv2d', 'DynamicConv2d',
                                       'DCDConv2d'])
def test_conv_module_and_toolkit_resnets_build_them(conv_type):
    module = ConvModule(8, 16, 3, padding=1, conv_cfg=dict(type=conv_type),
                        norm_cfg=dict(type='BN')).eval()
    assert type(module.conv).__name__ == conv_type
    assert module(torch.rand(2, 8, 7, 9)).shape == (2, 16, 7, 9)
    import mmdet.models  # noqa: F401 (registers the toolkits' backbones)
    import mmseg.models  # noqa: F401
    for scope, backbone in (
        ('mmdet', dict(type='ResNet', depth=18, base_channels=8,
                       conv_cfg=dict(type=conv_type))),
        ('mmdet', dict(type='ResNet', depth=50, base_channels=8,
                       dcn=dict(type=conv_type),
                       stage_with_dcn=(False, False, True, False))),
        ('mmseg', dict(type='ResNetV1c', depth=50, base_channels=8,
                       dcn=dict(type=conv_type),
                       stage_with_dcn=(False, False, True, False))),
    ):
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(backbone)
        model.eval()  # the toolkits' ResNet.train returns None
        names = [type(b.conv2).__name__ for b in model.layer3]
        assert set(names) == {conv_type}
        with torch.no_grad():
            outs = model(torch.rand(2, 3, 48, 40))
        assert outs[2].shape[2:] == (3, 3)


def test_temperature_hook_anneals_every_dynamic_conv():
    model = torch.nn.Sequential(DynamicConv2d(4, 4, 1), CondConv2d(4, 4, 1),
                                DynamicConv2d(4, 4, 3, padding=1))
    hook = DynamicConvTemperatureHook(start=30, end=1, duration=10)
    runner = SimpleNamespace(
        model=model, epoch=0, iter=0, train_dataloader=[None] * 4,
        message_hub=MessageHub.get_instance('dynamic_conv_hook_test'))
    seen = []
    for epoch in range(12):
        runner.epoch = epoch
        for batch_idx in range(4):
            hook.before_train_iter(runner, batch_idx)
            seen.append(model[0].temperature)
            assert model[2].temperature == model[0].temperature
    assert seen[0] == 30 and seen[-1] == 1
    assert seen[20] == pytest.approx(1 + 29 * 0.5)  # epoch 5 of 10
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    assert runner.message_hub.get_scalar(
        'train/dynamic_conv_temperature').current() == 1
    by_iter = DynamicConvTemperatureHook(duration=100, by_epoch=False)
    runner.iter = 25
    by_iter.before_train_iter(runner, 0)
    assert model[0].temperature == pytest.approx(1 + 29 * 0.75)
    with pytest.raises(ValueError, match='positive'):
        DynamicConvTemperatureHook(duration=0)


def test_plain_conv_checkpoints_initialise_them():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1)
    x = torch.randn(3, 8, 9, 10)
    dynamic = DynamicConv2d(8, 12, 3, stride=2, padding=1).eval()
    result = dynamic.load_state_dict(conv.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith('router') for k in result.missing_keys)
    with torch.no_grad():  # equal experts, weights summing to 1
        torch.testing.assert_close(dynamic(x), conv(x))
    cond = CondConv2d(8, 12, 3, stride=2, padding=1, num_experts=3)
    cond.load_state_dict(conv.state_dict(), strict=False)
    assert all(torch.equal(expert, conv.weight) for expert in cond.weight)
    dcd = DCDConv2d(8, 12, 3, stride=2, padding=1)
    result = dcd.load_state_dict(conv.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert torch.equal(dcd.static.weight, conv.weight)
    assert torch.equal(dcd.bias, conv.bias)
