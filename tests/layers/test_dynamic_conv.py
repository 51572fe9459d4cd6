"""CondConv2d, DynamicConv2d, DCDConv2d and the temperature hook."""
import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import MODELS, DefaultScope

from mmplug_involution.engine import DynamicConvTemperatureHook
from mmplug_involution.layers import CondConv2d, DCDConv2d, DynamicConv2d
from mmplug_involution.layers.dynamic_conv import pooled_cells

LAYERS = (CondConv2d, DynamicConv2d, DCDConv2d)
# every form, built as cls(in_channels, out_channels, kernel_size, ...)
FORMS = {
    'CondConv2d': CondConv2d,
    'DynamicConv2d': DynamicConv2d,
    'DCDConv2d': DCDConv2d,
    'DCDConv2d-sparse': partial(DCDConv2d, num_blocks=4),
    'DCDConv2d-pooled': partial(DCDConv2d, pool_size=2),
    'DCDConv2d-depthwise': partial(DCDConv2d, groups=12),
}
CASES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=1, stride=2, padding=0),
]


def run_alone(layer, x):
    return torch.cat([layer(x[i:i + 1]) for i in range(x.shape[0])])


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_shape_matches_conv2d_and_batch_independence_in_eval(form, case):
    torch.manual_seed(0)
    layer = FORMS[form](12, 24, **case).eval()
    x = torch.randn(4, 12, 11, 14)
    reference = F.conv2d(
        x, torch.zeros(24, 12, case['kernel_size'], case['kernel_size']), None,
        case['stride'], case['padding'], case.get('dilation', 1))
    with torch.no_grad():
        out = layer(x)
        torch.testing.assert_close(out, run_alone(layer, x))
    assert out.shape == reference.shape


@pytest.mark.parametrize(
    'build,channels',
    [
        (partial(CondConv2d, 8, 8, groups=2), 8),
        (partial(DynamicConv2d, 8, 8, groups=2), 8),
        (partial(DCDConv2d, 6, 12, groups=6), 6),  # depthwise: no BatchNorm
    ],
    ids=['CondConv2d', 'DynamicConv2d', 'DCDConv2d-depthwise'])
def test_batch_independent_in_training_too(build, channels):
    torch.manual_seed(0)
    layer = build(3, padding=1).train()
    x = torch.randn(5, channels, 7, 9)
    torch.testing.assert_close(layer(x), run_alone(layer, x))


@pytest.mark.parametrize(
    'cls', (CondConv2d, DynamicConv2d), ids=lambda c: c.__name__)
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
    dynamic.set_temperature(1.)
    cold = dynamic.routing(pooled)
    # a high temperature flattens the attention
    assert (hot.max(1).values < cold.max(1).values).all()


@pytest.mark.parametrize('form', FORMS)
def test_gradcheck_and_every_parameter_learns(form):
    torch.manual_seed(0)
    layer = FORMS[form](12, 12, 3, stride=2, padding=1).double().train()
    x = torch.randn(3, 12, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x, ), fast_mode=True)
    layer(x).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    'form', ['DCDConv2d', 'DCDConv2d-sparse', 'DCDConv2d-depthwise'])
def test_dcd_with_dynamic_parts_zeroed_is_its_static_conv(form):
    torch.manual_seed(0)
    # zero_init_dynamic: P = 0 (no dynamic residual), Lambda = hsig(0) = 1;
    # it survives mmengine's initialisation (a backbone's Kaiming init)
    layer = FORMS[form](
        12,
        24,
        3,
        stride=2,
        padding=1,
        zero_init_dynamic=True,
        init_cfg=dict(type='Kaiming', layer=['Conv2d', 'Linear']))
    layer.init_weights()
    layer.train()
    with torch.no_grad():
        layer.bias.uniform_()
        x = torch.randn(2, 12, 13, 10)
        expected = F.conv2d(x, layer.static.weight, layer.bias, 2, 1, 1,
                            layer.groups)
        torch.testing.assert_close(layer(x), expected)
    assert layer.static.weight.abs().sum() > 0 and layer.phi.weight.any()
    layer(x).sum().backward()  # P learns first, from the latent features
    p = layer.p if layer.depthwise else layer.p.weight
    assert p.grad.abs().sum() > 0 and layer.scale.weight.grad.any()


def test_depthwise_dcd_kernel_is_lambda_w0_plus_p_phi_r():
    """The depthwise form equals a float64 per-sample conv with its kernel."""
    torch.manual_seed(0)
    layer = DCDConv2d(
        6, 12, 5, stride=2, padding=3, dilation=2, groups=6,
        latent_dim=4).double().eval()
    x = torch.randn(3, 6, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        y = layer.squeeze(x.mean((2, 3)))
        y = y * (F.relu6(layer.squeeze_gate(y) + 3) / 3)
        for i in range(3):
            phi = layer.phi(y[i]).view(4, 4)
            lam = F.relu6(layer.scale(y[i]) + 3) / 3
            kernel = (
                lam[:, None] * layer.static.weight.flatten(1) +
                layer.p @ phi @ layer.r.flatten(1))
            expected = F.conv2d(x[i:i + 1], kernel.view(12, 1, 5, 5),
                                layer.bias, 2, 3, 2, 6)
            torch.testing.assert_close(layer(x[i:i + 1]), expected)


def test_sparse_residual_is_the_block_diagonal_dense_residual():
    """num_blocks=B equals a dense DCD with block-diagonal Q, Phi(x), P."""
    torch.manual_seed(0)
    blocks, latent, c_in, c_out = 3, 2, 9, 6
    sparse = DCDConv2d(
        c_in, c_out, 3, padding=1, num_blocks=blocks,
        latent_dim=latent).eval()
    dense = DCDConv2d(
        c_in, c_out, 3, padding=1, latent_dim=blocks * latent).eval()
    width = blocks * latent
    with torch.no_grad():
        for name in ('static', 'squeeze', 'squeeze_gate', 'scale'):
            getattr(dense,
                    name).load_state_dict(getattr(sparse, name).state_dict())
        dense.bias.copy_(sparse.bias)
        dense.q.weight.zero_()
        dense.p.weight.zero_()
        dense.phi.weight.zero_()
        phi_rows = dense.phi.weight.view(width, width, -1)
        for b in range(blocks):
            lat = slice(b * latent, (b + 1) * latent)
            dense.q.weight[lat, b * 3:(b + 1) * 3] = sparse.q.weight[lat]
            dense.p.weight[b * 2:(b + 1) * 2,
                           lat] = sparse.p.weight[b * 2:(b + 1) * 2]
            phi_rows[lat, lat] = sparse.phi.weight[b * latent**2:(b + 1) *
                                                   latent**2].view(
                                                       latent, latent, -1)
        for norm in ('q_norm', 'fusion_norm'):
            getattr(sparse, norm).running_mean.uniform_(-1, 1)
            getattr(sparse, norm).running_var.uniform_(0.5, 2)
            getattr(dense,
                    norm).load_state_dict(getattr(sparse, norm).state_dict())
        x = torch.randn(2, c_in, 7, 8)
        torch.testing.assert_close(sparse(x), dense(x))


def test_dcd_parameter_count_follows_the_formula():
    c_in, c_out, k = 64, 128, 3
    layer = DCDConv2d(c_in, c_out, k, padding=1, bias=False)
    latent = math.isqrt(c_in)  # 8
    squeeze = max(c_in, latent**2) // 16  # 4
    expected = (
        c_out * c_in * k * k  # W0
        + c_in * latent + latent * c_out  # Q, P
        + c_in * squeeze + squeeze * squeeze  # squeeze, SE gate
        + squeeze * latent**2  # Phi
        + squeeze * c_out  # Lambda
        + 2 * latent + 2 * latent)  # the two BatchNorms
    assert sum(p.numel() for p in layer.parameters()) == expected
    # the paper's expression for a 1x1 C -> C layer, C^2 + 2CL + (2C + L^2)
    # C / r, counts everything but the SE gate's S^2 and the BatchNorms
    c, latent, r = 256, 16, 16
    layer = DCDConv2d(c, c, 1, bias=False)
    paper = c**2 + 2 * c * latent + (2 * c + latent**2) * c // r
    assert sum(p.numel() for p in layer.parameters()) == \
        paper + (c // r)**2 + 4 * latent
    # the sparse residual: B blocks of L = floor(sqrt(C_in / B))
    sparse = DCDConv2d(c_in, c_out, k, padding=1, bias=False, num_blocks=4)
    latent = math.isqrt(c_in // 4)  # 4 per block
    assert sparse.latent_dim == latent
    assert sum(p.numel() for p in sparse.parameters()) == (
        c_out * c_in * k * k + (c_in + c_out) * latent + c_in * squeeze +
        squeeze * squeeze + squeeze * 4 * latent**2 + squeeze * c_out +
        4 * 4 * latent)
    # depthwise: W0 C_out x k^2, R k^2 x L_k, P C_out x L_k, L_k = k^2 // 2
    dw = DCDConv2d(c_in, c_in, k, padding=1, groups=c_in, bias=False)
    latent = k * k // 2
    assert dw.latent_dim == latent
    assert sum(p.numel() for p in dw.parameters()) == (
        c_in * k * k + k * k * latent + c_in * latent + c_in * squeeze +
        squeeze * squeeze + squeeze * latent**2 + squeeze * c_in)


def test_pooled_squeeze_reads_the_pooled_cells_in_float64():
    """pool_size=p: the squeeze reads the p x p average-pooled cells,
    channel-major (C_in * p^2 features), L and the squeeze width follow;
    odd sizes pool into uneven cells as adaptive pooling does."""
    torch.manual_seed(0)
    c_in, c_out = 16, 24
    layer = DCDConv2d(c_in, c_out, 3, padding=1, pool_size=2).double().eval()
    assert layer.latent_dim == math.isqrt(4 * c_in)  # 8
    assert layer.squeeze.weight.shape == (max(4 * c_in, 64) // 16, 4 * c_in)
    x = torch.randn(3, c_in, 7, 5, dtype=torch.float64)
    rows, cols = ((0, 4), (3, 7)), ((0, 3), (2, 5))  # adaptive cells
    cells = torch.stack([
        x[:, :, r0:r1, c0:c1].mean((2, 3)) for r0, r1 in rows
        for c0, c1 in cols
    ], 2).flatten(1)  # (N, C_in * 4), channel-major
    y = layer.squeeze(cells)
    y = y * (F.relu6(layer.squeeze_gate(y) + 3) / 3)
    phi = layer.phi(y).view(3, 8, 8)
    scale = F.relu6(layer.scale(y) + 3) / 3
    z = layer.q_norm(layer.q(x)).flatten(2)
    fused = layer.fusion_norm(phi @ z) + z
    expected = (layer.p.weight.flatten(1) @ fused).view(3, c_out, 7, 5)
    expected = expected + scale[:, :, None, None] * F.conv2d(
        x, layer.static.weight, padding=1) + layer.bias[:, None, None]
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_export_pooling_slices_the_adaptive_pooling_cells(monkeypatch):
    """The sliced cells used while exporting (ONNX has no adaptive
    pooling of run-time sizes) equal adaptive pooling at every size."""
    monkeypatch.setattr(torch.compiler, 'is_exporting', lambda: True)
    generator = torch.Generator().manual_seed(0)
    for height in range(1, 14):
        for width in range(1, 14):
            x = torch.randn(
                2, 3, height, width, generator=generator, dtype=torch.float64)
            for size in (2, 3, 4):
                torch.testing.assert_close(
                    pooled_cells(x, size),
                    F.adaptive_avg_pool2d(x, size).flatten(1),
                    rtol=1e-12,
                    atol=1e-12)


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
    (dict(cls=DCDConv2d, groups=2), 'depthwise form'),
    (dict(cls=DCDConv2d, padding=0), 'padding must be'),
    (dict(cls=DCDConv2d, num_blocks=3), 'num_blocks=3 must'),
    (dict(cls=DCDConv2d, num_blocks=2, groups=8), 'dense form'),
    (dict(cls=DCDConv2d, latent_dim=0), 'latent_dim must be >= 1'),
    (dict(cls=DCDConv2d, pool_size=0), 'pool_size must be an integer'),
    (dict(cls=DCDConv2d, pool_size=1.5), 'pool_size must be an integer'),
    (dict(cls=DCDConv2d, squeeze_ratio=0), 'squeeze_ratio must be'),
])
def test_bad_arguments(kwargs, match):
    cls = kwargs.pop('cls')
    args = dict(in_channels=8, out_channels=8, kernel_size=3, padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cls(**args)


@pytest.mark.parametrize('conv_type',
                         ['CondConv2d', 'DynamicConv2d', 'DCDConv2d'])
def test_conv_module_and_toolkit_resnets_build_them(conv_type):
    module = ConvModule(
        8,
        16,
        3,
        padding=1,
        conv_cfg=dict(type=conv_type),
        norm_cfg=dict(type='BN')).eval()
    assert type(module.conv).__name__ == conv_type
    assert module(torch.rand(2, 8, 7, 9)).shape == (2, 16, 7, 9)
    import mmdet.models  # noqa: F401 (registers the toolkits' backbones)
    import mmseg.models  # noqa: F401
    for scope, backbone in (
        ('mmdet',
         dict(
             type='ResNet',
             depth=18,
             base_channels=8,
             conv_cfg=dict(type=conv_type))),
        ('mmdet',
         dict(
             type='ResNet',
             depth=50,
             base_channels=8,
             dcn=dict(type=conv_type),
             stage_with_dcn=(False, False, True, False))),
        ('mmseg',
         dict(
             type='ResNetV1c',
             depth=50,
             base_channels=8,
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
    model = torch.nn.Sequential(
        DynamicConv2d(4, 4, 1), CondConv2d(4, 4, 1),
        DynamicConv2d(4, 4, 3, padding=1))
    hook = DynamicConvTemperatureHook(start=30, end=1, duration=10)
    runner = SimpleNamespace(
        model=model,
        epoch=0,
        iter=0,
        train_dataloader=[None] * 4,
        message_hub=MessageHub.get_instance('dynamic_conv_hook_test'))
    seen = []
    for epoch in range(12):
        runner.epoch = epoch
        for batch_idx in range(4):
            hook.before_train_iter(runner, batch_idx)
            seen.append(model[0].temperature.item())
            assert model[2].temperature == model[0].temperature
    assert seen[0] == 30 and seen[-1] == 1
    assert seen[20] == pytest.approx(1 + 29 * 0.5)  # epoch 5 of 10
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    assert runner.message_hub.get_scalar(
        'train/dynamic_conv_temperature').current() == 1
    by_iter = DynamicConvTemperatureHook(duration=100, by_epoch=False)
    runner.iter = 25
    by_iter.before_train_iter(runner, 0)
    assert model[0].temperature.item() == pytest.approx(1 + 29 * 0.75)
    with pytest.raises(ValueError, match='positive'):
        DynamicConvTemperatureHook(duration=0)
    with pytest.raises(ValueError, match='temperature must be positive'):
        DynamicConv2d(4, 4, 1, temperature=0)


class _TinyDynamicNet(BaseModel):
    """Two DynamicConv2d layers and a regression loss, for the runner."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            DynamicConv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            DynamicConv2d(8, 1, 1))

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.body(inputs)
        if mode == 'loss':
            return dict(loss=(out - targets).square().mean())
        return out


class _RandomImages(torch.utils.data.Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return dict(
            inputs=torch.randn(3, 9, 7, generator=generator),
            targets=torch.randn(1, 9, 7, generator=generator))


def _temperature_runner(work_dir, max_iters, resume=False):
    from mmengine.runner import Runner
    return Runner(
        model=_TinyDynamicNet(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_RandomImages(),
            sampler=dict(type='InfiniteSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=[
            dict(
                type='DynamicConvTemperatureHook',
                start=30,
                end=1,
                duration=10,
                by_epoch=False)
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False),
            logger=dict(type='LoggerHook', interval=100)),
        resume=resume,
        experiment_name=f'temperature_{max_iters}_{resume}',
        default_scope='mmdet')


def test_trained_temperature_survives_save_load_and_resume(tmp_path):
    # what the configs' custom_imports opt into: resuming loads the
    # runner's pickled state (HistoryBuffer) with weights_only=True
    import mmplug_involution.runtime  # noqa: F401
    hook = DynamicConvTemperatureHook(
        start=30, end=1, duration=10, by_epoch=False)
    runner = _temperature_runner(tmp_path, max_iters=4)
    runner.train()
    trained = runner.model.eval()
    tau = hook.temperature(3)  # set before the 4th (last) iteration
    assert trained.body[0].temperature.item() == pytest.approx(tau)
    checkpoint = tmp_path / 'iter_4.pth'
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    assert state['body.0.temperature'].item() == pytest.approx(tau)

    # a freshly built model loaded from the checkpoint computes the same
    from mmengine.runner import load_checkpoint
    fresh = _TinyDynamicNet().eval()
    assert fresh.body[0].temperature.item() == 30
    load_checkpoint(fresh, str(checkpoint))
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)

    # resuming continues the schedule (iteration 5 onwards, not 30 again)
    resumed = _temperature_runner(tmp_path, max_iters=8, resume=True)
    seen = []
    resumed.register_hook(_RecordTemperature(seen), priority='LOW')
    resumed.train()
    assert seen == pytest.approx([hook.temperature(i) for i in range(4, 8)])


class _RecordTemperature(Hook):

    def __init__(self, seen):
        self.seen = seen

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen.append(runner.model.body[0].temperature.item())


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
    # CondConv: each of E experts gets W * 2 / E, the plain conv while the
    # sigmoids sit at 1/2
    cond = CondConv2d(8, 12, 3, stride=2, padding=1, num_experts=3).eval()
    cond.load_state_dict(conv.state_dict(), strict=False)
    for expert in cond.weight:
        torch.testing.assert_close(expert, conv.weight * 2 / 3)
    with torch.no_grad():
        cond.router.weight.zero_()
        cond.router.bias.zero_()
        torch.testing.assert_close(cond(x), conv(x))
    # its own checkpoint loads unchanged
    copy = CondConv2d(8, 12, 3, stride=2, padding=1, num_experts=3)
    copy.load_state_dict(cond.state_dict())
    assert torch.equal(copy.weight, cond.weight)
    for groups in (1, 8):
        plain = torch.nn.Conv2d(8, 16, 3, 2, 1, groups=groups)
        dcd = DCDConv2d(
            8,
            16,
            3,
            stride=2,
            padding=1,
            groups=groups,
            zero_init_dynamic=True).eval()
        result = dcd.load_state_dict(plain.state_dict(), strict=False)
        assert result.unexpected_keys == []
        assert torch.equal(dcd.static.weight, plain.weight)
        assert torch.equal(dcd.bias, plain.bias)
        with torch.no_grad():
            torch.testing.assert_close(dcd(x), plain(x))


@pytest.mark.parametrize('config', [
    'mask-rcnn_r50-dcd-c3-c5_fpn_1x_coco.py',
    'mask-rcnn_r50-dyconv-c3-c5_fpn_1x_coco.py'
])
def test_coco_configs_start_as_the_imagenet_resnet(config):
    """The ImageNet checkpoint the configs load makes the dynamic backbone
    compute what the static ResNet-50 computes (DCD through
    zero_init_dynamic, DynamicConv through equal experts)."""
    from pathlib import Path

    import mmdet.models  # noqa: F401
    from mmengine.config import Config
    cfg = Config.fromfile(
        str(Path(__file__).parents[2] / 'configs' / 'dynamic_conv' / config))
    backbone = cfg.model.backbone.to_dict()
    backbone.pop('init_cfg')  # the torchvision checkpoint (no download)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        static = MODELS.build(
            dict(backbone, dcn=None, stage_with_dcn=(False, ) * 4))
        dynamic = MODELS.build(backbone)
    dynamic.init_weights()
    for module in static.modules():  # ImageNet-like BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    result = dynamic.load_state_dict(static.state_dict(), strict=False)
    assert result.unexpected_keys == []
    static.eval()
    dynamic.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(static(x), dynamic(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dcd_takes_its_dense_and_depthwise_forms_by_config():
    """conv_cfg=DCDConv2d turns mmdet's MobileNetV2 into DCD throughout:
    its 1x1 convs take the dense form, its depthwise 3x3 convs the
    depthwise form."""
    import mmdet.models  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(
            dict(
                type='MobileNetV2',
                widen_factor=0.25,
                out_indices=(2, 4),
                conv_cfg=dict(type='DCDConv2d')))
    model.eval()
    dcds = [m for m in model.modules() if isinstance(m, DCDConv2d)]
    assert {m.depthwise for m in dcds} == {True, False}
    inside = {id(sub) for m in dcds for sub in m.modules()}
    assert all(
        id(m) in inside for m in model.modules()
        if isinstance(m, torch.nn.Conv2d))  # no plain conv left
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 64, 48))
    assert [o.shape[2:] for o in outs] == [(8, 6), (4, 3)]
