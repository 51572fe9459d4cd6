"""RedNet backbone: shapes, freezing, init, checkpointing, weights, size."""
import pathlib

import pytest
import torch
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from mmplug_involution.analysis import model_complexity
from mmplug_involution.apis import build_config_model
from mmplug_involution.models import RedNet
from mmplug_involution.runtime import UnsafeCheckpointError

CONFIGS = pathlib.Path(__file__).parents[2] / 'configs'
CHANNELS = (256, 512, 1024, 2048)


def _ceil_div_chain(size, strides):
    """Spatial size after the stem (/4) and each stage's stride (ceil)."""
    for _ in range(2):
        size = -(-size // 2)
    sizes = []
    for s in strides:
        size = -(-size // s)
        sizes.append(size)
    return sizes


@pytest.mark.parametrize('depth', [26, 38, 50, 101, 152])
def test_output_shapes_every_depth(depth):
    model = RedNet(depth).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 16), (1, 512, 8, 8),
                                              (1, 1024, 4, 4), (1, 2048, 2, 2)]


@pytest.mark.parametrize('kwargs,expected', [
    (dict(out_indices=(1, 3)), [(512, 8), (2048, 2)]),
    (dict(out_indices=(2, )), [(1024, 4)]),
    (dict(
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(0, 1, 2)), [(256, 16), (512, 8), (1024, 4)]),
    (dict(base_channels=32, stem_channels=32, out_indices=(0, 3)), [(128, 16),
                                                                    (1024, 2)
                                                                    ]),
])
def test_out_indices_and_widths(kwargs, expected):
    model = RedNet(26, **kwargs).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [(o.shape[1], o.shape[2]) for o in outs] == expected


@pytest.mark.parametrize('size', [(225, 223), (97, 131)])
def test_odd_input_sizes(size):
    model = RedNet(26).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, *size))
    heights = _ceil_div_chain(size[0], (1, 2, 2, 2))
    widths = _ceil_div_chain(size[1], (1, 2, 2, 2))
    assert [tuple(o.shape[1:])
            for o in outs] == list(zip(CHANNELS, heights, widths))


def test_dilated_output_stride_8():
    model = RedNet(26, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)).eval()
    assert model.layer4[0].conv2.dilation == 4
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 97, 65))
    assert [tuple(o.shape[2:]) for o in outs] == [(25, 17)] + [(13, 9)] * 3
    # the dilated stages really use dilation: it changes the output
    plain = RedNet(26, strides=(1, 2, 1, 1)).eval()
    plain.load_state_dict(model.state_dict())
    image = torch.rand(1, 3, 97, 65)
    with torch.no_grad():
        assert not torch.allclose(plain(image)[3], model(image)[3])


def test_contract_dilation_halves_the_first_dilated_block():
    model = RedNet(  # RedNet-38: at least 2 blocks per stage
        38,
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        contract_dilation=True)
    assert [model.layer3[0].conv2.dilation,
            model.layer4[0].conv2.dilation] == [1, 2]
    assert [model.layer3[-1].conv2.dilation,
            model.layer4[-1].conv2.dilation] == [2, 4]
    assert model.layer2[0].conv2.dilation == 1  # undilated stages unchanged


def _bn_modes(module):
    return {m.training for m in module.modules() if isinstance(m, _BatchNorm)}


def test_frozen_stages_stay_frozen_through_train():
    model = RedNet(26, frozen_stages=1, norm_eval=False)
    model.train()
    for module in (model.stem, model.layer1):
        assert all(not p.requires_grad for p in module.parameters())
        assert _bn_modes(module) == {False}
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert _bn_modes(model.layer2) == {True}
    assert model.train() is model


def test_frozen_stages_get_no_gradient():
    model = RedNet(26, frozen_stages=2, norm_eval=False).train()
    sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
    assert all(p.grad is None for p in model.layer2.parameters())
    assert all(p.grad is not None for p in model.layer3.parameters())


@pytest.mark.parametrize('norm_eval', [True, False])
def test_norm_eval(norm_eval):
    model = RedNet(26, norm_eval=norm_eval).train()
    assert _bn_modes(model) == {not norm_eval}


@pytest.mark.parametrize('zero_init', [True, False])
def test_zero_init_residual(zero_init):
    model = RedNet(26, zero_init_residual=zero_init)
    model.init_weights()
    for layer in (model.layer1, model.layer4):
        for block in layer:
            expected = 0.0 if zero_init else 1.0
            assert torch.all(block.norm3.weight == expected)
            assert torch.all(block.norm1.weight == 1.0)


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = RedNet(26, norm_eval=False)
    ckpt = RedNet(26, norm_eval=False, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 48)
    outs = []
    for model in (plain, ckpt):
        model.train()
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        sum((o * torch.arange(o.numel()).view_as(o).sin()).sum()
            for o in out).backward()
        outs.append((out, xi.grad, {
            n: p.grad
            for n, p in model.named_parameters()
        }))

    def assert_close(a, b, msg=None):
        # the recomputed forward sums in another order: float32 noise
        # relative to the largest value (train-mode BN makes these large)
        torch.testing.assert_close(
            a, b, rtol=1e-4, atol=1e-5 * a.abs().max().item(), msg=msg)

    for a, b in zip(outs[0][0], outs[1][0]):
        assert_close(a, b)
    assert_close(outs[0][1], outs[1][1])
    for name, grad in outs[0][2].items():
        assert_close(grad, outs[1][2][name], msg=name)


def test_norm_cfg_reaches_every_norm():
    model = RedNet(26, norm_cfg=dict(type='GN', num_groups=8))
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert hasattr(model.layer1[0], 'gn3')
    assert type(model.layer1[0].conv2.conv1.gn).__name__ == 'GroupNorm'


def test_bad_arguments():
    with pytest.raises(ValueError, match='invalid depth 34'):
        RedNet(34)
    with pytest.raises(ValueError, match='one entry per stage'):
        RedNet(50, strides=(1, 2))
    with pytest.raises(ValueError, match='frozen_stages must be -1 to'):
        RedNet(50, frozen_stages=5)
    with pytest.raises(ValueError, match='out_indices'):
        RedNet(50, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1))


@pytest.mark.parametrize('kwargs,match', [
    (dict(deep_stem=True), "RedNet has its own stem .* remove deep_stem"),
    (dict(dcn=dict(type='DCN', deform_groups=1)),
     r"takes no dcn .* keep type='ResNet' and set\s+dcn=dict\("
     r"type='Involution'"),
    (dict(multi_grid=(1, 2)), 'RedNet-50 has 3 there'),
    (dict(style='tf'), "style must be 'pytorch' or 'caffe'"),
    (dict(expansion=2), 'expand by 4, got expansion=2: remove expansion'),
    (dict(drop_path_rate=0.05), 'no stochastic depth .* drop_path_rate=0'),
])
def test_arguments_without_a_rednet_meaning_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RedNet(50, **kwargs)


def test_toolkit_defaults_of_those_arguments_are_accepted():
    model = RedNet(
        26,
        deep_stem=False,
        dcn=None,
        stage_with_dcn=(False, True, True, True),
        expansion=4,
        drop_path_rate=0.)
    assert type(model.layer2[0].conv2).__name__ == 'Involution'


def test_style_caffe_strides_the_first_1x1_conv():
    model = RedNet(26, style='caffe').eval()
    block = model.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == 1
    assert RedNet(26).layer2[0].conv2.stride == 2
    with torch.no_grad():
        assert [tuple(o.shape[2:])
                for o in model(torch.rand(1, 3, 65, 47))] == [(17, 12), (9, 6),
                                                              (5, 3), (3, 2)]


def test_avg_down_pools_before_the_shortcut_conv():
    model = RedNet(26, avg_down=True).eval()
    downsample = model.layer2[0].downsample
    assert isinstance(downsample[0], torch.nn.AvgPool2d)
    assert downsample[1].stride == (1, 1)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))[3].shape == (1, 2048, 2, 2)


def test_stem_channels_none_follows_base_channels():
    model = RedNet(26, stem_channels=None, base_channels=32)
    assert model.stem[4].conv.out_channels == 32
    assert model.stem[1].channels == 16


def test_conv_cfg_reaches_the_1x1_and_stem_convs():
    model = RedNet(26, conv_cfg=dict(type='ConvWS')).eval()
    block = model.layer1[0]
    for conv in (block.conv1, block.conv3, block.downsample[0],
                 model.stem[0].conv, model.stem[4].conv):
        assert type(conv).__name__ == 'ConvWS2d'
    assert type(block.conv2).__name__ == 'Involution'
    assert set(model.state_dict()) == set(RedNet(26).state_dict())
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))[0].shape == (1, 256, 16, 16)


def test_plugins_sit_where_they_sit_in_resnet():
    from mmdet.models.backbones import ResNet
    plugins = [
        dict(
            cfg=dict(type='ContextBlock', ratio=1. / 16),
            stages=(False, True, True, True),
            position='after_conv3'),
        dict(
            cfg=dict(
                type='GeneralizedAttention',
                spatial_range=-1,
                num_heads=8,
                attention_type='0010',
                kv_stride=2),
            stages=(False, False, True, True),
            position='after_conv2'),
    ]
    ours = RedNet(50, plugins=plugins)
    theirs = ResNet(50, plugins=plugins)
    for stage in range(1, 5):
        block, reference = (
            getattr(model, f'layer{stage}')[0] for model in (ours, theirs))
        for position in ('after_conv1', 'after_conv2', 'after_conv3'):
            names = f'{position}_plugin_names'
            assert getattr(block, names) == getattr(reference, names)
    with torch.no_grad():
        assert ours.eval()(torch.rand(1, 3, 64,
                                      64))[3].shape == (1, 2048, 2, 2)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_built_by_plain_name_from_both_toolkits(scope):
    from mmengine.registry import DefaultScope, init_default_scope
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(dict(type='RedNet', depth=50))
    assert isinstance(model, RedNet)


# ------------------------------------------------------------------ weights

REFERENCE_KEYS_SAMPLE = {
    'stem.0.conv.weight': (32, 3, 3, 3),
    'stem.0.bn.weight': (32, ),
    'stem.1.conv1.conv.weight': (8, 32, 1, 1),
    'stem.1.conv1.bn.running_var': (8, ),
    'stem.1.conv2.conv.weight': (18, 8, 1, 1),
    'stem.1.conv2.conv.bias': (18, ),
    'stem.2.weight': (32, ),
    'stem.4.conv.weight': (64, 32, 3, 3),
    'stem.4.bn.bias': (64, ),
    'layer1.0.conv1.weight': (64, 64, 1, 1),
    'layer1.0.bn1.weight': (64, ),
    'layer1.0.conv2.conv1.conv.weight': (16, 64, 1, 1),
    'layer1.0.conv2.conv2.conv.weight': (49 * 4, 16, 1, 1),
    'layer1.0.conv2.conv2.conv.bias': (49 * 4, ),
    'layer1.0.bn2.weight': (64, ),
    'layer1.0.conv3.weight': (256, 64, 1, 1),
    'layer1.0.bn3.weight': (256, ),
    'layer1.0.downsample.0.weight': (256, 64, 1, 1),
    'layer1.0.downsample.1.weight': (256, ),
    'layer4.0.conv2.conv2.conv.weight': (49 * 32, 128, 1, 1),
    'layer4.2.bn3.running_mean': (2048, ),
}


def test_reference_key_layout():
    shapes = {
        k: tuple(v.shape)
        for k, v in RedNet(50, stem_kernel_size=3).state_dict().items()
    }
    for key, shape in REFERENCE_KEYS_SAMPLE.items():
        assert shapes[key] == shape, key
    assert not any(k.startswith(('stem.3', 'maxpool')) for k in shapes)


def _imagenet_classifier(depth):
    """The project's mmpretrain ImageNet classifier of RedNet-``depth``."""
    cfg = Config.fromfile(
        str(CONFIGS / 'rednet' / f'rednet{depth}_32xb64-warmup-coslr_in1k.py'))
    return build_config_model(cfg)


def _reference_checkpoint(path, depth=26):
    """An mmcls-format RedNet checkpoint (stem K=3) with random weights."""
    source = _imagenet_classifier(depth)
    state = {
        k: torch.randn_like(v.float()).to(v.dtype)
        for k, v in source.state_dict().items()
    }
    torch.save(
        dict(
            meta=dict(
                mmcls_version='0.12.0',
                CLASSES=('tench', 'goldfish'),
                epoch=130,
                config='model = dict(...)'),
            state_dict=state), path)
    return state


def _pretrained(path, **kwargs):
    return RedNet(
        26,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'),
        **kwargs)


@pytest.fixture
def mmengine_log():
    """Everything logged to mmengine's current logger during the test."""
    import io
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def test_reference_checkpoint_loads_key_for_key(tmp_path, mmengine_log):
    path = tmp_path / 'rednet26_mmcls.pth'
    state = _reference_checkpoint(path)
    model = _pretrained(path, stem_kernel_size=3)
    model.init_weights()
    log = mmengine_log.getvalue()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state['backbone.' + key]), key
    assert 'missing keys' not in log and 'unexpected key' not in log
    assert 'size mismatch' not in log and 'stem involution head' not in log
    # the whole classifier loads the same file strictly
    classifier = _imagenet_classifier(26)
    classifier.load_state_dict(torch.load(path)['state_dict'], strict=True)


def test_stem_kernel_mismatch_gives_one_explained_warning(
        tmp_path, mmengine_log):
    path = tmp_path / 'rednet26_mmcls.pth'
    state = _reference_checkpoint(path)
    model = _pretrained(path, stem_kernel_size=7)
    initial_head = model.stem[1].conv2.conv.weight.detach().clone()
    model.init_weights()
    log = mmengine_log.getvalue()
    assert log.count('stem involution head') == 1
    assert 'generates 18 = 2x9' in log and 'needs 98' in log
    assert 'missing keys' not in log and 'size mismatch' not in log
    loaded = model.state_dict()
    for key, value in loaded.items():
        if key.startswith('stem.1.conv2.'):
            assert value.shape[0] == 98
        else:
            assert torch.equal(value, state['backbone.' + key]), key
    assert model.stem[1].conv2.conv.weight.shape == initial_head.shape


@pytest.mark.parametrize('checkpoint', [
    'torchvision://resnet50',
    'open-mmlab://resnet50_v1c',
    'open-mmlab://detectron2/resnet50_caffe',
    'mmcls://resnet50',
    'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    's3://bucket/resnext101_32x4d.pth',
])
def test_resnet_checkpoints_are_refused_by_name(checkpoint):
    for kwargs in (dict(
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
                   dict(pretrained=checkpoint)):
        with pytest.raises(ValueError, match='not a RedNet checkpoint'):
            RedNet(26, **kwargs)


def test_rednet_names_pass_the_name_check():
    for checkpoint in ('https://example.org/rednet50-resnet-style.pth',
                       'work_dirs/epoch_12.pth', 'checkpoints/resnet50.pth'):
        RedNet(26, init_cfg=dict(type='Pretrained', checkpoint=checkpoint))


def test_foreign_checkpoint_is_refused_by_its_keys(tmp_path):
    from mmseg.models.backbones import ResNetV1c
    path = tmp_path / 'imagenet_weights.pth'  # a name that says nothing
    resnet = {
        key: torch.randn_like(value) if value.is_floating_point() else value
        for key, value in ResNetV1c(depth=50).state_dict().items()
    }
    torch.save({'state_dict': resnet}, path)
    model = RedNet(50, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(
            ValueError,
            match=r"not a RedNet's .*'stem\.0\.weight'"
            r" but no involution"):
        model.init_weights()
    fitting = [
        key for key, value in model.state_dict().items() if key in resnet
        and resnet[key].shape == value.shape and value.dtype.is_floating_point
    ]
    assert 'layer1.0.conv1.weight' in fitting  # what would have half-loaded
    for key in fitting:
        assert not torch.equal(model.state_dict()[key], resnet[key]), key
    # the same inside a detector's checkpoint (load_from, tools/test.py)
    from mmengine.runner import load_state_dict
    detector_state = {
        'backbone.' + k: v
        for k, v in ResNetV1c(depth=50).state_dict().items()
    }
    with pytest.raises(ValueError, match='loaded into backbone are not'):
        load_state_dict(
            torch.nn.ModuleDict(dict(backbone=model)), detector_state)


def test_pretrained_goes_through_the_safe_loader(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError):
        _pretrained(path).init_weights()


class _Evil:

    def __reduce__(self):
        return (print, ('this must never run', ))


# --------------------------------------------------------------- complexity

PAPER = {26: (9.23, 1.73), 50: (15.54, 2.71)}


@pytest.mark.parametrize('depth', sorted(PAPER))
def test_paper_params_and_flops_within_2_percent(depth):
    result = model_complexity(_imagenet_classifier(depth), (3, 224, 224))
    params, flops = PAPER[depth]
    assert abs(result['params'] / 1e6 / params - 1) < 0.02
    assert abs(result['flops'] / 1e9 / flops - 1) < 0.02
    assert 'mmplug_involution::involution2d' not in result['unsupported']


@pytest.mark.parametrize('memory_format',
                         [torch.contiguous_format, torch.channels_last])
def test_runs_channels_last_on_cpu_and_returns_the_input_format(memory_format):
    """On CPU every involution works on channels_last tensors whatever the
    input's format (one conversion before the stem); the outputs come back
    in the input's format, equal to those of the other format."""
    torch.manual_seed(0)
    model = RedNet(26, base_channels=16, stem_channels=32).eval()
    x = torch.rand(2, 3, 61, 47)
    other = (
        torch.channels_last if memory_format == torch.contiguous_format else
        torch.contiguous_format)
    with torch.no_grad():
        expected = model(x.contiguous(memory_format=other))
    model = model.to(memory_format=memory_format)
    layouts = []

    def record(module, inputs, output):
        layouts.append(
            (inputs[0].is_contiguous(memory_format=torch.channels_last),
             output.is_contiguous(memory_format=torch.channels_last)))

    from mmplug_involution.layers import Involution
    handles = [
        m.register_forward_hook(record) for m in model.modules()
        if isinstance(m, Involution)
    ]
    with torch.no_grad():
        outs = model(x.contiguous(memory_format=memory_format))
    for handle in handles:
        handle.remove()
    assert len(layouts) == 1 + 8 and set(layouts) == {(True, True)}
    for out, ref in zip(outs, expected):
        assert out.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_eval_batchnorm_folds_with_mmcv_fuse_conv_bn():
    """mmcv's own helper folds every conv+BN pair (the BN after an
    involution stays: it does not fold into a per-pixel kernel)."""
    from mmcv.cnn import fuse_conv_bn
    torch.manual_seed(0)
    model = RedNet(26, base_channels=16, stem_channels=32, norm_eval=False)
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model(torch.rand(2, 3, 64, 48))
    model.eval()
    x = torch.rand(1, 3, 61, 47)
    with torch.no_grad():
        expected = model(x)
        norms_before = sum(isinstance(m, _BatchNorm) for m in model.modules())
        fused = fuse_conv_bn(model)
        norms_after = sum(isinstance(m, _BatchNorm) for m in fused.modules())
        outs = fused(x)
    # left: the BN after each involution (stem + 8 bottlenecks)
    assert norms_after == 1 + 8 < norms_before
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
