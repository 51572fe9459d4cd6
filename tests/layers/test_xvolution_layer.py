"""The XVolution layer, its deploy form and XVolutionResNet."""
import logging

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

from mmplug_involution.layers import XVolution, switch_xvolution_to_deploy
from mmplug_involution.layers import xvolution as xvolution_module
from mmplug_involution.models import XVolutionResNet

LOCAL = ('pssa', 'involution')


def randomise_norms(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so folding shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator))
            module.running_var.copy_(
                torch.rand(size, generator=generator) + 0.5)
            # gains below 1 keep deep random networks' activations moderate
            # (large ones saturate the attention softmax, where rounding
            # differences of 1e-7 can flip a near-tie)
            module.weight.data.copy_(
                torch.rand(size, generator=generator) * 0.5 + 0.25)
            module.bias.data.copy_(
                torch.randn(size, generator=generator) * 0.5)
    return model


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize('attention', ('pssa', 'involution', 'sa'))
@pytest.mark.parametrize('stride,size,expected', [(1, (15, 20), (15, 20)),
                                                  (2, (15, 21), (8, 11)),
                                                  (2, (7, 1), (4, 1))])
def test_output_shape_odd_sizes(attention, stride, size, expected):
    layer = XVolution(32, 32, 3, stride=stride, attention=attention).eval()
    with torch.no_grad():
        assert layer(torch.rand(2, 32, *size)).shape == (2, 32) + expected


def test_self_attention_changes_channels():
    layer = XVolution(16, 48, stride=2, groups=4, attention='sa')
    assert layer(torch.rand(2, 16, 9, 10)).shape == (2, 48, 5, 5)


@pytest.mark.parametrize('attention', ('pssa', 'involution', 'sa'))
def test_gradcheck_and_every_parameter_learns(attention):
    torch.manual_seed(0)
    layer = XVolution(
        4, 4, 3, stride=2, groups=2, attention=attention).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x, ), fast_mode=True)
    layer(x).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('attention', LOCAL)
@pytest.mark.parametrize('kwargs', [
    dict(stride=1),
    dict(stride=2),
    dict(stride=1, dilation=2, kernel_size=5),
    dict(stride=2, qk_proj=False, bias=True),
])
def test_deploy_equals_training_form_in_eval(attention, kwargs):
    torch.manual_seed(0)
    layer = randomise_norms(XVolution(32, 32, attention=attention,
                                      **kwargs)).eval()
    x = torch.randn(2, 32, 13, 18)
    with torch.no_grad():
        expected = layer(x)
        assert layer.switch_to_deploy()
        result = layer(x)
    assert layer.deploy
    assert not hasattr(layer, 'conv') and not hasattr(layer, 'conv_norm')
    assert relative_error(result, expected) <= 1e-5


def test_deploy_state_dict_loads_into_a_deploy_built_layer():
    layer = randomise_norms(XVolution(16, 16, stride=2)).eval()
    layer.switch_to_deploy()
    built = XVolution(16, 16, stride=2, deploy=True).eval()
    built.load_state_dict(layer.state_dict())  # strict
    x = torch.randn(1, 16, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(built(x), layer(x))
    assert {'fused.weight', 'fused.bias',
            'attention_scale'} <= set(built.state_dict())


def test_self_attention_stays_two_branch_and_says_so(monkeypatch):
    logged = []
    monkeypatch.setattr(xvolution_module, 'print_log',
                        lambda msg, **kwargs: logged.append((msg, kwargs)))
    layer = XVolution(16, 16, attention='sa').eval()
    assert layer.switch_to_deploy() is False
    assert len(logged) == 1 and 'stays two-branch' in logged[0][0]
    assert logged[0][1]['level'] == logging.WARNING
    assert not layer.deploy and hasattr(layer, 'conv')
    with pytest.raises(ValueError, match='no deploy form'):
        XVolution(16, 16, attention='sa', deploy=True)


@pytest.mark.parametrize('kwargs,match', [
    (dict(attention='window'), 'attention must be one of'),
    (dict(out_channels=32), 'in_channels must equal out_channels'),
    (dict(padding=2), r'padding must be dilation\*\(K-1\)/2 = 1'),
    (dict(kernel_size=4), 'kernel_size must be odd'),
    (dict(groups=3), 'groups=3 must divide out_channels=16'),
])
def test_bad_arguments(kwargs, match):
    args = dict(in_channels=16, out_channels=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        XVolution(**args)


def test_plain_conv_checkpoint_initialises_the_conv_branch():
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    layer = XVolution(16, 16)
    result = layer.load_state_dict(conv.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert torch.equal(layer.conv.weight, conv.weight)


@pytest.mark.parametrize('depth,attention', [(50, 'pssa'), (18, 'involution'),
                                             (34, 'pssa')])
def test_backbone_deploy_equals_training_form(depth, attention):
    torch.manual_seed(0)
    model = XVolutionResNet(
        depth,
        base_channels=16,
        xvolution=dict(type='XVolution', attention=attention),
        stage_with_xvolution=(False, True, True, False))
    model = randomise_norms(model).eval()
    x = torch.randn(1, 3, 67, 90)
    with torch.no_grad():
        expected = model(x)
        fused = switch_xvolution_to_deploy(model)
        result = model(x)
    layers = [m for m in model.modules() if isinstance(m, XVolution)]
    assert fused == len(layers) > 0 and all(m.deploy for m in layers)
    for out, ref in zip(result, expected):
        assert relative_error(out, ref) <= 1e-5


def test_backbone_places_xvolution_in_stage_3_by_default():
    bottleneck = XVolutionResNet(50, base_channels=16)
    assert [type(b.conv2).__name__ for b in bottleneck.layer3] == \
        ['XVolution'] * 6
    for stage in (bottleneck.layer1, bottleneck.layer2, bottleneck.layer4):
        assert not any(isinstance(m, XVolution) for m in stage.modules())
    basic = XVolutionResNet(34, base_channels=16)
    # every conv2; conv1 where channels agree at stride 1 (not the first)
    assert [type(b.conv1).__name__ for b in basic.layer3] == \
        ['Conv2d'] + ['XVolution'] * 5
    assert all(isinstance(b.conv2, XVolution) for b in basic.layer3)
    with pytest.raises(ValueError, match='takes no `dcn`'):
        XVolutionResNet(50, dcn=dict(type='XVolution'))


def test_backbone_keeps_resnet_zero_init_and_returns_self_from_train():
    model = XVolutionResNet(18, base_channels=16)
    model.init_weights()
    assert all((b.norm2.weight == 0).all() for b in model.layer3)
    assert model.train() is model and model.eval() is model


def test_resnet_checkpoint_initialises_the_backbone():
    from mmdet.models.backbones import ResNet
    resnet = ResNet(50, base_channels=16)
    model = XVolutionResNet(50, base_channels=16)
    result = model.load_state_dict(resnet.state_dict(), strict=False)
    assert result.unexpected_keys == []
    # only the X-volutions' own parts are new: attention and branch norms
    assert result.missing_keys and all(
        key.split('.')[3] in ('attention', 'conv_norm', 'attention_norm')
        for key in result.missing_keys), result.missing_keys
    torch.testing.assert_close(model.layer3[0].conv2.conv.weight,
                               resnet.layer3[0].conv2.weight)


@pytest.mark.parametrize('scope,backbone', [
    ('mmdet',
     dict(
         type='ResNet',
         depth=50,
         base_channels=16,
         dcn=dict(type='XVolution', attention='pssa'),
         stage_with_dcn=(False, False, True, False))),
    ('mmseg',
     dict(
         type='ResNetV1c',
         depth=50,
         base_channels=16,
         dcn=dict(type='XVolution', attention='involution'),
         stage_with_dcn=(False, False, True, False))),
    ('mmdet', dict(type='XVolutionResNet', depth=50, base_channels=16)),
    ('mmseg', dict(type='XVolutionResNet', depth=50, base_channels=16)),
])
def test_toolkit_backbones_build_it_from_config(scope, backbone):
    import mmdet.models  # noqa: F401 (registers mmdet's backbones)
    import mmseg.models  # noqa: F401
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(backbone)
    model.eval()  # mmdet's ResNet.train returns None
    assert [type(b.conv2).__name__ for b in model.layer3] == \
        ['XVolution'] * 6
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 72))
    assert outs[2].shape == (1, 256, 4, 5)


def test_conv_module_builds_it_through_conv_cfg():
    from mmcv.cnn import ConvModule
    module = ConvModule(
        16,
        16,
        3,
        padding=1,
        conv_cfg=dict(type='XVolution'),
        norm_cfg=dict(type='BN')).eval()
    assert isinstance(module.conv, XVolution) and not module.with_bias
    with torch.no_grad():
        assert module(torch.rand(2, 16, 9, 7)).shape == (2, 16, 9, 7)


def test_zero_init_attention_starts_as_the_plain_network():
    from mmdet.models.backbones import ResNet
    resnet = ResNet(50, base_channels=16)
    resnet.eval()  # mmdet's ResNet.train returns None
    model = XVolutionResNet(
        50,
        base_channels=16,
        xvolution=dict(type='XVolution', zero_init_attention=True))
    model.init_weights()  # ResNet's Constant(1) BN init must not undo it
    model.load_state_dict(resnet.state_dict(), strict=False)
    model.eval()
    assert all(
        (b.conv2.attention_norm.weight == 0).all() for b in model.layer3)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for out, ref in zip(model(x), resnet(x)):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and the attention still learns: its scale gets a gradient
    model.train()
    model(x)[2].square().sum().backward()
    assert model.layer3[0].conv2.attention_norm.weight.grad.abs().sum() > 0
