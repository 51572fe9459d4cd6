"""RedNet backbone: shapes, freezing, init, checkpointing, weights, size."""
import pathlib

import pytest
import torch
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from mmplug_involution.models import GlobalPoolClassifier, RedNet
from mmplug_involution.runtime import UnsafeCheckpointError, model_complexity

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
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 16),
                                              (1, 512, 8, 8),
                                              (1, 1024, 4, 4),
                                              (1, 2048, 2, 2)]


@pytest.mark.parametrize('kwargs,expected', [
    (dict(out_indices=(1, 3)), [(512, 8), (2048, 2)]),
    (dict(out_indices=(2, )), [(1024, 4)]),
    (dict(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
          out_indices=(0, 1, 2)), [(256, 16), (512, 8), (1024, 4)]),
    (dict(base_channels=32, stem_channels=32, out_indices=(0, 3)),
     [(128, 16), (1024, 2)]),
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
    assert [tuple(o.shape[1:]) for o in outs] == list(
        zip(CHANNELS, heights, widths))


def test_dilated_output_stride_8():
    model = RedNet(
        26, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)).eval()
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
    for a, b in zip(outs[0][0], outs[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(outs[0][1], outs[1][1])
    for name, grad in outs[0][2].items():
        torch.testing.assert_close(grad, outs[1][2][name], msg=name)


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


def _reference_checkpoint(path, depth=26):
    """An mmcls-format RedNet checkpoint (stem K=3) with random weights."""
    source = GlobalPoolClassifier(
        dict(type='RedNet', depth=depth, stem_kernel_size=3))
    state = {k: torch.randn_like(v.float()).to(v.dtype)
             for k, v in source.state_dict().items()}
    torch.save(
        dict(
            meta=dict(
                mmcls_version='0.12.0', CLASSES=('tench', 'goldfish'),
                epoch=130, config='model = dict(...)'),
            state_dict=state), path)
    return state


def _pretrained(path, **kwargs):
    return RedNet(
        26,
        init_cfg=dict(type='Pretrained', checkpoint=str(path),
                      prefix='backbone.'),
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
    classifier = GlobalPoolClassifier(
        dict(type='RedNet', depth=26, stem_kernel_size=3))
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
    cfg = Config.fromfile(str(CONFIGS / 'rednet' / f'rednet{depth}_in1k.py'))
    from mmengine.registry import MODELS
    result = model_complexity(MODELS.build(cfg.model), (3, 224, 224))
    params, flops = PAPER[depth]
    assert abs(result['params'] / 1e6 / params - 1) < 0.02
    assert abs(result['flops'] / 1e9 / flops - 1) < 0.02
    assert 'mmplug_involution::involution2d' not in result['unsupported']
