"""The Involution layer: shapes, maths, reference key layout, norm_cfg."""
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_conv_layer

from mmplug_involution.layers import Involution
from ..ops.reference import involution_reference


@pytest.mark.parametrize('size,stride,dilation,expected', [
    ((57, 40), 1, 1, (57, 40)),
    ((57, 40), 2, 1, (29, 20)),
    ((225, 223), 2, 1, (113, 112)),
    ((97, 131), 2, 2, (49, 66)),
    ((31, 30), 1, 2, (31, 30)),
])
def test_output_shape_odd_sizes(size, stride, dilation, expected):
    layer = Involution(32, kernel_size=7, stride=stride, dilation=dilation)
    out = layer(torch.randn(2, 32, *size))
    assert out.shape == (2, 32, *expected)


def test_forward_is_generator_plus_op():
    torch.manual_seed(0)
    layer = Involution(32, kernel_size=5, stride=2, group_channels=8).eval()
    x = torch.randn(2, 32, 15, 12)
    pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True)  # 8 x 6: ceil, odd-safe
    assert pooled.shape[-2:] == (8, 6)
    bn = layer.conv1.bn
    reduced = F.relu(
        F.batch_norm(
            F.conv2d(pooled, layer.conv1.conv.weight),
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            eps=bn.eps))
    kernel = F.conv2d(reduced, layer.conv2.conv.weight, layer.conv2.conv.bias)
    expected = involution_reference(x, kernel, 5, 2)
    torch.testing.assert_close(
        layer(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_reference_key_layout():
    layer = Involution(64, kernel_size=7)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes['conv1.conv.weight'] == (16, 64, 1, 1)
    assert 'conv1.conv.bias' not in shapes
    assert shapes['conv1.bn.weight'] == (16, )
    assert shapes['conv2.conv.weight'] == (49 * 4, 16, 1, 1)
    assert shapes['conv2.conv.bias'] == (49 * 4, )
    assert set(shapes) == {
        'conv1.conv.weight', 'conv1.bn.weight', 'conv1.bn.bias',
        'conv1.bn.running_mean', 'conv1.bn.running_var',
        'conv1.bn.num_batches_tracked', 'conv2.conv.weight', 'conv2.conv.bias'
    }


def test_reference_stem_involution_loads_key_for_key():
    """The reference stem involution(32, K=3).

    conv1 [8,32,1,1], conv2 [18,8,1,1].
    """
    state = {
        'conv1.conv.weight': torch.randn(8, 32, 1, 1),
        'conv1.bn.weight': torch.rand(8),
        'conv1.bn.bias': torch.randn(8),
        'conv1.bn.running_mean': torch.randn(8),
        'conv1.bn.running_var': torch.rand(8) + 0.5,
        'conv1.bn.num_batches_tracked': torch.tensor(5),
        'conv2.conv.weight': torch.randn(18, 8, 1, 1),
        'conv2.conv.bias': torch.randn(18),
    }
    layer = Involution(32, kernel_size=3)
    layer.load_state_dict(state, strict=True)
    torch.testing.assert_close(layer.conv2.conv.bias, state['conv2.conv.bias'])


@pytest.mark.parametrize('norm_cfg,attr,cls', [
    (dict(type='GN', num_groups=4), 'gn', torch.nn.GroupNorm),
    (dict(type='SyncBN'), 'bn', torch.nn.SyncBatchNorm),
    (dict(type='BN', momentum=0.3), 'bn', torch.nn.BatchNorm2d),
])
def test_norm_cfg_is_honoured(norm_cfg, attr, cls):
    layer = Involution(32, norm_cfg=norm_cfg)
    norm = getattr(layer.conv1, attr)
    assert isinstance(norm, cls)
    if 'momentum' in norm_cfg:
        assert norm.momentum == 0.3


def test_act_cfg_and_every_parameter_gets_a_gradient():
    layer = Involution(32, kernel_size=3, stride=2, act_cfg=dict(type='GELU'))
    assert isinstance(layer.conv1.activate, torch.nn.GELU)
    layer(torch.randn(2, 32, 9, 9)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=30), 'divisible by group_channels=16'),
    (dict(in_channels=32, kernel_size=4), 'odd'),
    (dict(in_channels=48, reduction_ratio=5), 'reduction_ratio=5'),
    (dict(in_channels=32, out_channels=64), 'keeps its channels'),
    (dict(in_channels=32, groups=2), 'set by group_channels'),
    (dict(in_channels=32, kernel_size=3, padding=2),
     r'padding=2 does not centre the 3x3 window .* needs padding=1'),
    (dict(in_channels=32, kernel_size=3, dilation=2,
          padding=1), 'needs padding=2'),
    (dict(in_channels=32, kernel_size=(3, 5)), 'square kernel_size'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Involution(**kwargs)


def test_built_by_build_conv_layer_with_the_conv_signature():
    # the caller's window (a ResNet bottleneck's 3x3, dilated)
    layer = build_conv_layer(
        dict(type='Involution'),
        32,
        32,
        kernel_size=3,
        stride=2,
        padding=2,
        dilation=2,
        bias=False)
    assert (layer.kernel_size, layer.stride, layer.padding,
            layer.dilation) == (3, 2, 2, 2)
    # the layer config names another window: the padding centres it
    layer = build_conv_layer(
        dict(type='Involution', window_size=7),
        32,
        32, (3, 3),
        stride=1,
        padding=(2, 2),
        dilation=2)
    assert (layer.kernel_size, layer.padding) == (7, 6)
    x = torch.rand(2, 32, 11, 9)
    assert layer(x).shape == x.shape
    assert layer.conv2.conv.out_channels == 2 * 49
    # inside mmcv's ConvModule, with its norm and activation
    module = ConvModule(
        32,
        32,
        3,
        padding=1,
        conv_cfg=dict(type='Involution'),
        norm_cfg=dict(type='BN'))
    assert isinstance(module.conv, Involution)
    assert module(x).shape == x.shape


def test_bias_is_added_to_the_output():
    torch.manual_seed(0)
    plain = Involution(16, kernel_size=3).eval()
    biased = Involution(16, 16, 3, bias=True).eval()
    assert 'bias' in dict(biased.named_parameters())
    assert 'bias' not in dict(plain.named_parameters())
    biased.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        biased.bias.copy_(torch.arange(16.))
        x = torch.rand(2, 16, 7, 6)
        torch.testing.assert_close(
            biased(x),
            plain(x) + torch.arange(16.)[:, None, None])


def test_registered_in_root_registry_for_both_toolkits():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    for registry in (MMDET_MODELS, MMSEG_MODELS):
        layer = registry.build(
            dict(type='Involution', in_channels=16, kernel_size=3))
        assert isinstance(layer, Involution)


def _span_scale(layer):
    """conv2's weight std in units of 1 / sqrt(K*K * C/r)."""
    weight = layer.conv2.conv.weight
    return weight.std().item() * (layer.kernel_size**2 * weight.shape[1])**0.5


@pytest.mark.parametrize('kernel_size,channels', [(7, 64), (3, 128)])
def test_an_initialised_involution_does_not_amplify_its_input(
        kernel_size, channels):
    torch.manual_seed(0)
    layer = Involution(channels, kernel_size=kernel_size)
    assert abs(_span_scale(layer) - 1) < 0.05
    assert torch.count_nonzero(layer.conv2.conv.bias) == 0
    layer.conv2.conv.weight.data.mul_(7)  # as some parent init_cfg leaves it
    layer.init_weights()
    assert abs(_span_scale(layer) - 1) < 0.05
    x = torch.relu(torch.randn(4, channels, 40, 40))
    with torch.no_grad():
        gain = layer(x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()
    assert 0.2 < gain < 1.0, gain


@pytest.mark.parametrize('stride', [1, 2])
def test_an_identity_initialised_involution_adds_its_input(stride):
    """identity=True sets each group's centre tap to 1 more than the plain
    draw, and an involution is linear in its kernel: the output gains the
    input itself (at the strided pixels)."""
    torch.manual_seed(0)
    layer = Involution(32, kernel_size=5, stride=stride).eval()
    x = torch.randn(2, 32, 11, 9)
    weight = layer.conv2.conv.weight
    with torch.no_grad():
        plain = layer(x)
        drawn = weight.clone()
        layer.init_span_conv(identity=True)
        assert torch.count_nonzero(layer.conv2.conv.bias) == layer.groups
        weight.copy_(drawn)  # the new draw aside, only the bias differs
        shifted = layer(x)
    torch.testing.assert_close(
        shifted - plain, x[:, :, ::stride, ::stride], atol=1e-5, rtol=1e-5)


def test_an_own_init_cfg_is_followed():
    layer = Involution(
        32, init_cfg=dict(type='Constant', val=0.5, layer='Conv2d'))
    layer.init_weights()
    assert torch.all(layer.conv2.conv.weight == 0.5)
