"""The DCD authors' ImageNet models as configs: exactly their sizes.

Each config's classifier is held to the authors' model (github
liyunsheng13/dcd), as re-implemented independently in
:mod:`tests.models.dcd_authors`: the same parameter count to the unit (the
counts of the authors' own code under current torch are written out too),
the same multiply-adds at 224 px counted by the same analyzer, and DCD
layers of the same sizes in the same places. That the weights mean the same
is checked through the converter (``tests/tools/test_dcd2mm.py``).
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmplug_involution.analysis import model_complexity
from mmplug_involution.apis import build_config_model
from mmplug_involution.layers import DCDConv2d
from mmplug_involution.models import DCDClsHead, DCDMobileNetV2, DCDResNet
from mmplug_involution.models.backbones.dcd_mobilenet_v2 import \
    dcd_mobilenet_v2_latent_dim
from . import dcd_authors

ROOT = Path(__file__).parents[2]
# config -> (the authors' model, its parameters counted from their code)
MODELS = {
    'resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py':
    (lambda: dcd_authors.resnet18_dcd(dropout=0.1), 14_703_332),
    'resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py':
    (lambda: dcd_authors.resnet50_dcd(dropout=0.1), 29_835_056),
    'mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py':
    (lambda: dcd_authors.MobileNetV2_dcd(fc_squeeze=16, dropout=0.2),
     5_720_028),
    'mobilenet-v2-050-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py':
    (lambda: dcd_authors.MobileNetV2_dcd(width_mult=0.5, dropout=0.2),
     3_056_616),
}


def _ours(config: str):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'dynamic_conv' / config))
    torch.manual_seed(0)
    return build_config_model(cfg)


@pytest.fixture(scope='module', params=sorted(MODELS))
def pair(request):
    """(our classifier, the authors' model, their parameter count)."""
    authors, count = MODELS[request.param]
    return _ours(request.param), authors(), count


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameters_are_the_authors_to_the_unit(pair):
    ours, authors, count = pair
    assert _parameters(authors) == count
    assert _parameters(ours) == count


def test_multiply_adds_are_the_authors(pair):
    ours, authors, _ = pair
    ours_size = model_complexity(ours, (3, 224, 224))
    authors_size = model_complexity(authors, (3, 224, 224))
    assert ours_size['flops'] == authors_size['flops']


def _dynamic_layers(model):
    """(C_in, C_out, k, stride, L, pooled size, squeeze width) of each
    dynamic conv, in module order."""
    layers = []
    for module in model.modules():
        if isinstance(module, DCDConv2d):
            layers.append(
                (module.in_channels, module.out_channels,
                 module.kernel_size[0], module.stride[0], module.latent_dim,
                 module.pool_size, module.squeeze.out_features))
        elif isinstance(module, dcd_authors.AuthorsDynamicConv):
            conv = module.conv
            layers.append(
                (conv.in_channels, conv.out_channels, conv.kernel_size[0],
                 conv.stride[0], module.dim, module.avg_pool.output_size,
                 module.fc[0].out_features))
    return layers


def test_dcd_layers_have_the_authors_sizes_and_places(pair):
    ours, authors, _ = pair
    layers = _dynamic_layers(ours)
    assert layers == _dynamic_layers(authors)
    assert len(layers) in (16, 32, 48)  # R-18 3x3s, MV2 1x1s, R-50 all
    head, theirs = ours.head, authors.classifier[-1]
    assert isinstance(head, DCDClsHead)
    assert head.dropout.p == authors.classifier[0].p
    assert sorted(tuple(p.shape) for p in head.parameters()) == sorted(
        tuple(p.shape) for p in theirs.parameters())


@pytest.mark.parametrize(
    'features, out_channels, reduction, latent',
    [
        (16 * 4, 96, 8, 8),  # width 1.0, first expansion: min(64, 96) // 8
        (96, 24, 2, 12),  # its projection: min(96, 24) // 2
        (64 * 4, 384, 8, 16),  # 64 -> 384: 32, halved as 32^2 > 2 * 256
        (8 * 4, 48, 8, 4),  # half width: 32 // 8 = 4
        (3, 1000, 2, 4),  # at least 4
        (100, 1000, 2, 12),  # 50 -> 25 -> 12 while L^2 > 200
    ])
def test_mobilenet_v2_latent_rule(features, out_channels, reduction, latent):
    assert dcd_mobilenet_v2_latent_dim(features, out_channels,
                                       reduction) == latent


def _copy_classifier(head: DCDClsHead, theirs: dcd_authors.DYCls) -> None:
    """The authors' classifier's weights into ours, by their roles."""
    names = dict(
        cls='static',
        cls_q='q',
        cls_p='p',
        bn1='q_norm',
        bn2='fusion_norm',
        **{
            'fc.0': 'squeeze',
            'fc.1.fc.0': 'squeeze_gate'
        },
        fc_phi='phi',
        fc_scale='scale')
    state = {}
    for key, value in theirs.state_dict().items():
        module, _, name = key.rpartition('.')
        state[f'{names[module]}.{name}'] = value
    head.load_state_dict(state, strict=True)


def test_head_computes_the_authors_classifier_and_learns():
    torch.manual_seed(0)
    theirs = dcd_authors.DYCls(48, 10).double()
    x = torch.randn(6, 48, dtype=torch.double)
    for module in theirs.modules():  # non-trivial statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
            module.weight.data.normal_(1, 0.2)
            module.bias.data.normal_(0, 0.2)
    theirs.eval()
    head = DCDClsHead(10, 48, dropout_ratio=0.3).double().eval()
    _copy_classifier(head, theirs)
    torch.testing.assert_close(head((x, )), theirs(x), rtol=1e-12, atol=1e-12)
    head.train()  # dropout and batch statistics: still every weight learns
    head((x, )).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in head.parameters())
    torch.autograd.gradcheck(lambda t: head.eval()((t, )),
                             x[:3].clone().requires_grad_())


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=0, in_channels=8), 'num_classes'),
    (dict(num_classes=10, in_channels=8, latent_dim=0), 'latent_dim'),
    (dict(num_classes=10, in_channels=8, dropout_ratio=1.), 'dropout'),
])
def test_head_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DCDClsHead(**kwargs)


def test_head_refuses_an_unpooled_feature():
    with pytest.raises(ValueError, match='GlobalAveragePooling'):
        DCDClsHead(10, 8)((torch.rand(2, 8, 3, 3), ))


@pytest.mark.parametrize('config, dropout', [
    ('resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py', 0.1),
    ('resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py', 0.1),
    ('mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py', 0.2),
    ('mobilenet-v2-050-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py', 0.2),
])
def test_the_authors_recipe_details(config, dropout):
    """Dropout, their label smoothing (0.9 on the class, 0.1 / 999 on each
    other) and their mixup schedule (alpha from 0 to 0.2 over 100
    epochs)."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'dynamic_conv' / config))
    assert cfg.model.head.dropout_ratio == dropout
    smoothing = cfg.model.head.loss.label_smooth_val
    assert 1 - smoothing + smoothing / 1000 == pytest.approx(0.9)
    assert smoothing / 1000 == pytest.approx(0.1 / 999)
    assert cfg.model.train_cfg.augments == dict(type='Mixup', alpha=0.2)
    assert cfg.custom_hooks == [
        dict(type='MixupAlphaRampHook', ramp_epochs=100)
    ]


@pytest.mark.parametrize('build', [
    lambda cfg: DCDResNet(18, dcd_cfg=cfg),
    lambda cfg: DCDMobileNetV2(dcd_cfg=cfg),
])
@pytest.mark.parametrize('cfg', ['DCDConv2d', dict(pool_size=2), None])
def test_backbones_refuse_a_dcd_cfg_without_a_type(build, cfg):
    with pytest.raises(ValueError, match='dcd_cfg must be a layer config'):
        build(cfg)
