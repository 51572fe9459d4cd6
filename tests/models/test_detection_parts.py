"""InvolutionFPN, InvolutionRPNHead, InvolutionFCNMaskHead.

Built by plain name from mmdet; shapes as their mmdet parents; involution
where the 3x3 convs were, convs elsewhere; state-dict layout; gradients;
size; argument errors.
"""
import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope

from mmplug_involution.layers import Involution, InvolutionModule
from mmplug_involution.models.dense_heads import InvolutionRPNHead
from mmplug_involution.models.necks import InvolutionFPN
from mmplug_involution.models.roi_heads import InvolutionFCNMaskHead

# backbone-like sizes of an odd image: each level ceil-halves the one below
ODD_SIZES = [(97, 75), (49, 38), (25, 19)]
# exact halves, for upsample_cfg=dict(scale_factor=2)
EVEN_SIZES = [(100, 76), (50, 38), (25, 19)]


def _build(cfg):
    init_default_scope('mmdet')
    return MODELS.build(cfg)


def _pair(inv_type, conv_type, **cfg):
    """The involution component and its mmdet parent, same config."""
    torch.manual_seed(0)
    involution = _build(dict(type=inv_type, **cfg))
    return involution, _build(dict(type=conv_type, **cfg))


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


def _flat(outputs):
    """The tensors of a (nested) tuple/list of outputs."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for out in outputs for t in _flat(out)]


def _shapes(outputs):
    return [tuple(t.shape) for t in _flat(outputs)]


def _assert_grads_reach_every_parameter(model, outputs):
    # random weights: a plain sum would give (near) zero gradients behind a
    # norm layer
    torch.manual_seed(1)
    loss = sum((out * torch.randn_like(out)).sum() for out in _flat(outputs))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def _is_conv_module(module):
    return isinstance(module, ConvModule) and type(module.conv) is nn.Conv2d


@pytest.mark.parametrize('name,cls', [
    ('InvolutionFPN', InvolutionFPN),
    ('InvolutionRPNHead', InvolutionRPNHead),
    ('InvolutionFCNMaskHead', InvolutionFCNMaskHead),
])
def test_plain_names_resolve_to_ours_from_mmdet(name, cls):
    init_default_scope('mmdet')
    assert MODELS.get(name) is cls
    assert name not in MODELS.module_dict  # registered in the root only


# ---------------------------------------------------------------------- FPN

FPN_CASES = [
    (dict(num_outs=5), ODD_SIZES),
    (dict(num_outs=5, add_extra_convs='on_input'), ODD_SIZES),
    (dict(num_outs=4, start_level=1, add_extra_convs='on_lateral'), ODD_SIZES),
    (dict(
        num_outs=5, add_extra_convs='on_output',
        relu_before_extra_convs=True), ODD_SIZES),
    (dict(num_outs=2, end_level=1), ODD_SIZES),
    (dict(
        num_outs=4,
        add_extra_convs=True,
        norm_cfg=dict(type='GN', num_groups=8),
        act_cfg=dict(type='ReLU'),
        no_norm_on_lateral=True), ODD_SIZES),
    (dict(num_outs=3, upsample_cfg=dict(scale_factor=2,
                                        mode='nearest')), EVEN_SIZES),
]


@pytest.mark.parametrize('kwargs,sizes', FPN_CASES)
def test_fpn_matches_fpn(kwargs, sizes):
    cfg = dict(in_channels=[16, 24, 32], out_channels=32, **kwargs)
    neck, fpn = _pair('InvolutionFPN', 'FPN', **cfg)
    assert type(neck) is InvolutionFPN
    inputs = [
        torch.rand(2, c, *size) for c, size in zip(cfg['in_channels'], sizes)
    ]
    outs = neck(inputs)
    assert len(outs) == cfg['num_outs']
    assert _shapes(outs) == _shapes(fpn(inputs))

    levels = len(neck.lateral_convs)
    assert len(neck.fpn_convs) == len(fpn.fpn_convs)
    assert all(isinstance(m, Involution) for m in neck.fpn_convs[:levels])
    assert all(_is_conv_module(m) for m in neck.fpn_convs[levels:])
    assert all(_is_conv_module(m) for m in neck.lateral_convs)
    assert _num_params(neck) < _num_params(fpn)
    _assert_grads_reach_every_parameter(neck, outs)


def test_fpn_norm_and_act_follow_each_involution():
    norm_cfg = dict(type='GN', num_groups=8)
    neck = InvolutionFPN([16, 32],
                         32,
                         2,
                         norm_cfg=norm_cfg,
                         act_cfg=dict(type='ReLU'))
    inv = neck.fpn_convs[0]
    assert isinstance(inv.norm, nn.GroupNorm) and inv.norm.num_groups == 8
    assert isinstance(inv.activate, nn.ReLU)
    assert 'fpn_convs.0.norm.weight' in neck.state_dict()
    # the defaults, as in the paper: the bare involution
    plain = InvolutionFPN([16, 32], 32, 2).fpn_convs[0]
    assert isinstance(plain.norm, nn.Identity)
    assert isinstance(plain.activate, nn.Identity)
    x = torch.rand(1, 32, 9, 7)
    torch.testing.assert_close(plain(x), Involution.forward(plain, x))


def test_fpn_involution_arguments():
    neck = InvolutionFPN([16, 32],
                         64,
                         2,
                         involution_cfg=dict(
                             window_size=5,
                             group_channels=8,
                             reduction_ratio=2,
                             norm_cfg=dict(type='GN', num_groups=4)))
    inv = neck.fpn_convs[1]
    assert (inv.kernel_size, inv.groups, inv.padding) == (5, 8, 2)
    assert inv.conv1.conv.out_channels == 32
    assert isinstance(inv.conv1.gn, nn.GroupNorm)
    assert inv.conv2.conv.out_channels == 8 * 5 * 5
    # window_size=None: the 3x3 window of the conv it replaces
    assert InvolutionFPN(
        [16, 32], 32, 2,
        involution_cfg=dict(window_size=None)).fpn_convs[0].kernel_size == 3


@pytest.mark.parametrize('cls,args,kwargs', [
    (InvolutionFPN, ([16, 32], 64, 2), {}),
    (InvolutionRPNHead, (64, ), dict(feat_channels=64)),
    (InvolutionFCNMaskHead,
     (), dict(in_channels=64, conv_out_channels=64, num_classes=3)),
])
def test_involution_cfg_takes_no_layer_type(cls, args, kwargs):
    with pytest.raises(ValueError, match='layer type is fixed'):
        cls(*args, involution_cfg=dict(type='Involution'), **kwargs)


def test_fpn_retinanet_style():
    cfg = dict(
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_input',
        num_outs=5)
    neck, fpn = _pair('InvolutionFPN', 'FPN', **cfg)
    sizes = [(50, 38)] + ODD_SIZES[1:] + [(13, 10)]
    inputs = [
        torch.rand(1, c, *size) for c, size in zip(cfg['in_channels'], sizes)
    ]
    outs = neck(inputs)
    assert _shapes(outs) == _shapes(fpn(inputs)) == [(1, 256, 49, 38),
                                                     (1, 256, 25, 19),
                                                     (1, 256, 13, 10),
                                                     (1, 256, 7, 5),
                                                     (1, 256, 4, 3)]
    assert len(neck.fpn_convs) == 5
    assert all(isinstance(m, Involution) for m in neck.fpn_convs[:3])
    p6, p7 = neck.fpn_convs[3:]
    assert _is_conv_module(p6) and _is_conv_module(p7)
    assert (p6.conv.in_channels, p6.conv.stride) == (2048, (2, 2))
    assert (p7.conv.in_channels, p7.conv.stride) == (256, (2, 2))

    keys = neck.state_dict()
    assert keys['fpn_convs.0.conv1.conv.weight'].shape == (64, 256, 1, 1)
    assert keys['fpn_convs.0.conv1.bn.weight'].shape == (64, )
    assert keys['fpn_convs.0.conv2.conv.weight'].shape == (16 * 49, 64, 1, 1)
    assert keys['fpn_convs.2.conv2.conv.bias'].shape == (16 * 49, )
    assert keys['fpn_convs.3.conv.weight'].shape == (256, 2048, 3, 3)
    assert keys['lateral_convs.0.conv.weight'].shape == (256, 512, 1, 1)
    assert 'fpn_convs.0.conv.weight' not in keys
    # three 3x3 256 -> 256 convs become three involutions
    saved = _num_params(fpn) - _num_params(neck)
    assert saved == 3 * ((256 * 256 * 9 + 256) -
                         (256 * 64 + 2 * 64 + 64 * 784 + 784))


@pytest.mark.parametrize('kwargs,match', [
    (dict(involution_cfg=dict(window_size=6)), 'kernel_size must be odd'),
    (dict(involution_cfg=dict(group_channels=24)), 'group_channels=24'),
    (dict(involution_cfg=dict(reduction_ratio=5)), 'reduction_ratio=5'),
])
def test_fpn_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InvolutionFPN([16, 32], 32, 2, **kwargs)


# ---------------------------------------------------------------- RPN head


@pytest.mark.parametrize('num_convs', [1, 2])
def test_rpn_head_matches_rpn_head(num_convs):
    head, rpn = _pair(
        'InvolutionRPNHead',
        'RPNHead',
        in_channels=32,
        feat_channels=32,
        num_convs=num_convs)
    assert type(head) is InvolutionRPNHead
    feats = [torch.rand(2, 32, *size) for size in ODD_SIZES]
    outs = head(feats)
    assert _shapes(outs) == _shapes(rpn(feats))
    assert _shapes(outs[0]) == [(2, 9, *size) for size in ODD_SIZES]

    assert type(head.rpn_cls) is nn.Conv2d and type(head.rpn_reg) is nn.Conv2d
    keys = head.state_dict()
    if num_convs == 1:
        assert isinstance(head.rpn_conv, Involution)
        assert keys['rpn_conv.conv1.conv.weight'].shape == (8, 32, 1, 1)
        assert keys['rpn_conv.conv2.conv.weight'].shape == (2 * 49, 8, 1, 1)
    else:
        assert len(head.rpn_conv) == 2
        for block in head.rpn_conv:
            assert isinstance(block, InvolutionModule)
            assert isinstance(block.activate, nn.ReLU)
        assert 'rpn_conv.1.conv2.conv.bias' in keys
    assert _num_params(head) < _num_params(rpn)
    _assert_grads_reach_every_parameter(head, outs)


def test_rpn_head_involution_arguments():
    head = InvolutionRPNHead(
        64,
        feat_channels=64,
        involution_cfg=dict(
            window_size=3, group_channels=32, reduction_ratio=8,
            norm_cfg=None))
    inv = head.rpn_conv
    assert (inv.kernel_size, inv.groups) == (3, 2)
    assert inv.conv1.conv.out_channels == 8
    assert not inv.conv1.with_norm


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=32), 'feat_channels == in_channels'),
    (dict(in_channels=32, feat_channels=64, num_convs=2), 'feat_channels=64'),
    (dict(in_channels=256, involution_cfg=dict(window_size=4)), 'must be odd'),
    (dict(in_channels=40, feat_channels=40), 'group_channels=16'),
])
def test_rpn_head_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(dict(type='InvolutionRPNHead', **kwargs))


# --------------------------------------------------------------- mask head

MASK_CASES = [
    dict(),
    dict(num_convs=2, norm_cfg=dict(type='GN', num_groups=4)),
    dict(
        upsample_cfg=dict(type='bilinear', scale_factor=2),
        class_agnostic=True),
]


@pytest.mark.parametrize('kwargs', MASK_CASES)
def test_mask_head_matches_fcn_mask_head(kwargs):
    cfg = dict(in_channels=32, conv_out_channels=32, num_classes=3, **kwargs)
    head, fcn = _pair('InvolutionFCNMaskHead', 'FCNMaskHead', **cfg)
    assert type(head) is InvolutionFCNMaskHead
    for rois in (torch.rand(5, 32, 14, 14), torch.rand(3, 32, 7, 9)):
        assert _shapes(head(rois)) == _shapes(fcn(rois))

    assert len(head.convs) == len(fcn.convs) == kwargs.get('num_convs', 4)
    for block in head.convs:
        assert isinstance(block, InvolutionModule)
        assert isinstance(block.activate, nn.ReLU)
    assert isinstance(head.conv_logits, nn.Conv2d)
    assert type(head.upsample) is type(fcn.upsample)
    keys = head.state_dict()
    assert keys['convs.0.conv1.conv.weight'].shape == (8, 32, 1, 1)
    assert keys['convs.1.conv2.conv.weight'].shape == (2 * 49, 8, 1, 1)
    assert ('convs.0.norm.weight' in keys) == ('norm_cfg' in kwargs)
    assert _num_params(head) < _num_params(fcn)
    head.init_weights()
    outs = head(torch.rand(4, 32, 14, 14))
    _assert_grads_reach_every_parameter(head, outs)


def test_mask_head_without_convs_keeps_fcn_mask_head():
    head = InvolutionFCNMaskHead(
        num_convs=0, in_channels=32, conv_out_channels=16, num_classes=3)
    assert len(head.convs) == 0
    assert head(torch.rand(2, 32, 14, 14)).shape == (2, 3, 28, 28)


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=256, conv_out_channels=128), 'conv_out_channels=128'),
    (dict(involution_cfg=dict(window_size=2)), 'must be odd'),
    (dict(in_channels=24, conv_out_channels=24), 'group_channels=16'),
])
def test_mask_head_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(dict(type='InvolutionFCNMaskHead', **kwargs))


@pytest.mark.parametrize('kwargs,match', [
    (dict(conv_kernel_size=5), 'conv_kernel_size=5 would be unused'),
    (dict(conv_cfg=dict(type='Conv2d')), 'configure them with involution_cfg'),
])
def test_mask_head_rejects_conv_settings_it_would_ignore(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InvolutionFCNMaskHead(num_classes=3, **kwargs)


def test_mask_head_window_from_conv_kernel_size():
    head = InvolutionFCNMaskHead(
        num_classes=3,
        conv_kernel_size=5,
        involution_cfg=dict(window_size=None))
    assert {(m.kernel_size, m.padding) for m in head.convs} == {(5, 2)}
    assert head(torch.rand(2, 256, 14, 14)).shape == (2, 3, 28, 28)


def test_every_involution_of_the_detector_starts_from_its_own_init():
    """Parents that keep their layers in torch containers (the RedNet stem,
    FPN's ModuleList, a multi-conv RPN head) or bring an init_cfg for every
    Conv2d (FPN's Xavier, the RPN head's Normal) still leave each involution
    with Involution.init_span_conv's draw, unless a checkpoint is loaded."""
    torch.manual_seed(0)
    model = _build(
        dict(
            type='MaskRCNN',
            backbone=dict(
                type='RedNet', depth=26, base_channels=16, stem_channels=32),
            neck=dict(
                type='InvolutionFPN',
                in_channels=[64, 128, 256, 512],
                out_channels=64,
                num_outs=5),
            rpn_head=dict(
                type='InvolutionRPNHead',
                in_channels=64,
                feat_channels=64,
                num_convs=2,
                anchor_generator=dict(
                    type='AnchorGenerator',
                    scales=[8],
                    ratios=[1.0],
                    strides=[4, 8, 16, 32, 64]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder')),
            roi_head=dict(
                type='StandardRoIHead',
                mask_roi_extractor=dict(
                    type='SingleRoIExtractor',
                    roi_layer=dict(type='RoIAlign', output_size=14),
                    out_channels=64,
                    featmap_strides=[4, 8, 16, 32]),
                mask_head=dict(
                    type='InvolutionFCNMaskHead',
                    in_channels=64,
                    conv_out_channels=64,
                    num_classes=3)),
            train_cfg=None,
            test_cfg=ConfigDict(rpn=None, rcnn=None)))
    for involution in (m for m in model.modules()
                       if isinstance(m, Involution)):
        involution.conv2.conv.weight.data.fill_(1.0)
    model.init_weights()
    scales = {
        name:
        m.conv2.conv.weight.std().item() *
        (m.kernel_size**2 * m.conv2.conv.weight.shape[1])**0.5
        for name, m in model.named_modules() if isinstance(m, Involution)
    }
    assert {
        'backbone.stem.1', 'neck.fpn_convs.0', 'rpn_head.rpn_conv.1',
        'roi_head.mask_head.convs.3'
    } <= set(scales)
    assert all(0.9 < s < 1.1 for s in scales.values()), scales


def test_mask_head_involutions_start_as_the_identity():
    """The mask head's involutions get the centre-tap bias of
    Involution.init_span_conv(identity=True) when built and again after
    init_weights (after FCNMaskHead's and the involutions' own)."""
    head = _build(
        dict(
            type='InvolutionFCNMaskHead',
            num_convs=2,
            in_channels=32,
            conv_out_channels=32,
            num_classes=3))
    centre = head.convs[0].kernel_size**2 // 2
    for built in (True, False):
        for involution in head.convs:
            bias = involution.conv2.conv.bias.view(involution.groups, -1)
            assert torch.all(bias[:, centre] == 1), built
            assert torch.count_nonzero(bias) == involution.groups, built
            bias.data.fill_(0.5)
        head.init_weights()


def test_fpn_loading_a_checkpoint_keeps_the_loaded_involutions(tmp_path):
    cfg = dict(
        type='InvolutionFPN',
        in_channels=[16, 32],
        out_channels=16,
        num_outs=2)
    source = _build(cfg)
    path = tmp_path / 'fpn.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    loaded = _build(
        dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    loaded.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
