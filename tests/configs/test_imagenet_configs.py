"""The ImageNet configs of X-volution and DCD: build, train step, size.

Each config builds its mmpretrain ``ImageClassifier``, trains one step on a
small batch (the config's own loss and batch augments) and predicts; its
parameters and multiply-adds at 224 px
(:func:`~mmplug_involution.analysis.model_complexity`, mmengine's counting)
are within 2% of the figure it is held to:

* the plain baselines (mmpretrain's own ResNet-18/50 and MobileNetV2
  configs) against mmpretrain's published sizes, which anchor the counting;
* the X-volution and DCD-in-every-conv configs against figures DERIVED
  from the architecture: the baseline's published size plus the replacing
  layer's own parameters and multiply-adds at the config's placement (the
  formulas below). Neither paper's ImageNet table could be read in any stored
  source (the X-volution paper publishes no code; of the DCD paper only
  the abstract and introduction were readable).

The DCD authors' models are held to their code's exact sizes in
``tests/models/test_dcd_authors_models.py``; here they train one step.
"""
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmplug_involution.analysis import model_complexity
from mmplug_involution.apis import build_config_model

ROOT = Path(__file__).parents[2]
DCD = 'configs/dynamic_conv/'
CONFIGS = {
    'xvolution-r50-pssa': 'configs/xvolution/xvolution-r50-pssa_8xb32_in1k.py',
    'xvolution-r50-involution':
    'configs/xvolution/xvolution-r50-involution_8xb32_in1k.py',
    'xvolution-r50-sa': 'configs/xvolution/xvolution-r50-sa_8xb32_in1k.py',
    'resnet18-dcd-allconv': DCD + 'resnet18-dcd-allconv_8xb32_in1k.py',
    'mobilenet-v2-dcd-allconv':
    DCD + 'mobilenet-v2-dcd-allconv_8xb64-mixup-coslr-300e_in1k.py',
    # the DCD authors' models (exact sizes: tests/models/)
    'resnet18-dcd': DCD + 'resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py',
    'resnet50-dcd': DCD + 'resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py',
    'mobilenet-v2-dcd':
    DCD + 'mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py',
    'mobilenet-v2-050-dcd':
    DCD + 'mobilenet-v2-050-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py',
    # the baselines: mmpretrain's own configs
    'resnet18': 'mmpretrain::resnet/resnet18_8xb32_in1k.py',
    'resnet50': 'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    'mobilenet-v2': 'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
}
# mmpretrain's published sizes (its model zoo / metafiles): params, MAdds
PUBLISHED = {
    'resnet18': (11.69e6, 1.82e9),
    'resnet50': (25.56e6, 4.12e9),
    'mobilenet-v2': (3.50e6, 0.319e9),
}
# where the X-volution configs put their layers
STAGE3_CONV2 = [f'backbone.layer3.{i}.conv2' for i in range(6)]


def _load(name: str, tmp_path_factory) -> Config:
    path = CONFIGS[name]
    if path.startswith('mmpretrain::'):
        user = tmp_path_factory.mktemp(name) / 'config.py'
        user.write_text(f"_base_ = ['{path}']\n")
        path = str(user)
    else:
        path = str(ROOT / path)
    return Config.fromfile(path)


def _build(name: str, tmp_path_factory):
    cfg = _load(name, tmp_path_factory)
    torch.manual_seed(0)
    return build_config_model(cfg)


@pytest.fixture(scope='module')
def sizes(tmp_path_factory):
    """name -> model_complexity at 224 px, each model built once."""
    cache = {}

    def size(name):
        if name not in cache:
            cache[name] = model_complexity(
                _build(name, tmp_path_factory), (3, 224, 224))
        return cache[name]

    return size


# --- the derived figures -------------------------------------------------
#
# Multiply-adds are counted as mmengine counts them (and as the published
# baselines were): convolutions, matrix products and linear layers, plus
# two per element for an eval-mode BatchNorm.


def _xvolution_extra(attention: str,
                     channels: int,
                     in_hw: int,
                     out_hw: int,
                     groups: int,
                     kernel: int = 3):
    """(params, MAdds) an X-volution adds to the K x K conv it replaces:
    its attention branch and its two branch BatchNorms (docs/xvolution.md).
    """
    c, taps = channels, kernel * kernel
    norms = (4 * c, 4 * c * out_hw)
    if attention == 'pssa':  # W_q at the output positions, W_k everywhere,
        # q.k over the taps, softmax, involution aggregation
        params = 2 * c * c + groups * taps
        madds = c * c * (out_hw + in_hw) + 2 * c * taps * out_hw
    elif attention == 'involution':  # reduce (1x1, BN), span (1x1 + bias)
        reduced = c // 4
        params = c * reduced + 2 * reduced + reduced * groups * taps
        params += groups * taps
        madds = out_hw * (
            c * reduced + 2 * reduced + reduced * groups * taps + c * taps)
    else:  # sa: q (output positions), k, v; q k^T and attention v
        params = 3 * c * c
        madds = c * c * (out_hw + 2 * in_hw) + 2 * c * out_hw * in_hw
    return params + norms[0], madds + norms[1]


def _xvolution_r50(attention: str):
    """ResNet-50 plus X-volution in the six stage-3 conv2 (256 channels;
    the first reads 28x28 at stride 2, the others 14x14)."""
    params, madds = PUBLISHED['resnet50']
    for in_hw in (28 * 28, ) + (14 * 14, ) * 5:
        extra = _xvolution_extra(attention, 256, in_hw, 14 * 14, 16)
        params, madds = params + extra[0], madds + extra[1]
    return params, madds


def _dcd_extra(in_channels: int,
               out_channels: int,
               kernel: int,
               out_hw: int,
               depthwise: bool = False):
    """(params, MAdds) a DCDConv2d (defaults) adds to the conv it replaces.

    Dense: squeeze C_in -> S with an SE gate, generators S -> L^2 (Phi) and
    S -> C_out (Lambda), Q (1x1, C_in -> L, BN2d), Phi(x) (L x L, BN1d),
    P (L -> C_out); L = floor(sqrt(C_in)), S = max(C_in, L^2) // 16 >= 4.
    Depthwise: the same generators with L_k = floor(k^2 / 2) kernel
    elements, R (L_k x k^2) and P (C_out x L_k) forming the kernel once per
    sample; the convolution costs what the static one does.
    """
    latent = kernel * kernel // 2 if depthwise else math.isqrt(in_channels)
    squeeze = max(max(in_channels, latent**2) // 16, 4)
    generators = squeeze * (in_channels + squeeze + latent**2 + out_channels)
    if depthwise:
        params = generators + latent * kernel * kernel + out_channels * latent
        madds = generators + out_channels * latent * (latent + kernel**2)
        return params, madds
    params = generators + latent * (in_channels + out_channels) + 4 * latent
    madds = generators + out_hw * latent * (
        in_channels + latent + out_channels + 4)
    return params, madds


def _resnet18_convs():
    """(C_in, C_out, k, H_out * W_out) of every conv of ResNet-18 at
    224 px: the stem, each BasicBlock's two 3x3 convs, the 1x1 shortcuts."""
    yield 3, 64, 7, 112 * 112
    in_channels, size = 64, 56
    for stage, channels in enumerate((64, 128, 256, 512)):
        size = size // 2 if stage else size
        for block in range(2):
            yield in_channels, channels, 3, size * size
            yield channels, channels, 3, size * size
            if in_channels != channels:
                yield in_channels, channels, 1, size * size
            in_channels = channels


# expansion t, channels, blocks, stride of the first (the paper's table)
MOBILENET_V2_ARCH = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                     (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1)]


def _mobilenet_v2_convs():
    """(C_in, C_out, k, H_out * W_out, depthwise) of every conv of
    MobileNetV2 x1.0 at 224 px: the stem, each inverted residual's 1x1
    expansion (t != 1), 3x3 depthwise and 1x1 projection, the last 1x1."""
    yield 3, 32, 3, 112 * 112, False
    in_channels, size = 32, 112
    for t, channels, blocks, stride in MOBILENET_V2_ARCH:
        for block in range(blocks):
            hidden = in_channels * t
            if t != 1:
                yield in_channels, hidden, 1, size * size, False
            size = size // stride if block == 0 else size
            yield hidden, hidden, 3, size * size, True
            yield hidden, channels, 1, size * size, False
            in_channels = channels
    yield 320, 1280, 1, 7 * 7, False


def _with_dcd(baseline: str, convs):
    params, madds = PUBLISHED[baseline]
    for conv in convs:
        extra = _dcd_extra(*conv)
        params, madds = params + extra[0], madds + extra[1]
    return params, madds


DERIVED = {
    'resnet18': PUBLISHED['resnet18'],
    'resnet50': PUBLISHED['resnet50'],
    'mobilenet-v2': PUBLISHED['mobilenet-v2'],
    'xvolution-r50-pssa': _xvolution_r50('pssa'),
    'xvolution-r50-involution': _xvolution_r50('involution'),
    'xvolution-r50-sa': _xvolution_r50('sa'),
    'resnet18-dcd-allconv': _with_dcd('resnet18', _resnet18_convs()),
    'mobilenet-v2-dcd-allconv': _with_dcd('mobilenet-v2',
                                          _mobilenet_v2_convs()),
}
# --- the tests -----------------------------------------------------------


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_trains_one_step_and_predicts(name, tmp_path_factory):
    from mmpretrain.structures import DataSample

    model = _build(name, tmp_path_factory)
    torch.manual_seed(0)
    packed = dict(
        inputs=[
            torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
            for _ in range(2)
        ],
        data_samples=[DataSample().set_gt_label(k) for k in (3, 7)])
    model.train()
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters())
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        predictions = model(**data, mode='predict')
    assert [p.pred_score.shape for p in predictions] == [(1000, )] * 2


@pytest.mark.parametrize('name, layer_type, where', [
    ('xvolution-r50-pssa', 'XVolution', STAGE3_CONV2),
    ('xvolution-r50-involution', 'XVolution', STAGE3_CONV2),
    ('xvolution-r50-sa', 'XVolution', STAGE3_CONV2),
    ('resnet18-dcd-allconv', 'DCDConv2d', _resnet18_convs),
    ('mobilenet-v2-dcd-allconv', 'DCDConv2d', _mobilenet_v2_convs),
])
def test_placement(name, layer_type, where, tmp_path_factory):
    """X-volution in exactly stage 3's 3x3 convs; DCD in every conv of the
    backbone (mmpretrain hands ``conv_cfg`` to all of them)."""
    model = _build(name, tmp_path_factory)
    placed = [
        module_name for module_name, module in model.named_modules()
        if type(module).__name__ == layer_type
    ]
    if layer_type == 'XVolution':
        assert placed == where
        assert {model.get_submodule(n).attention_type
                for n in placed} == {name.split('-')[-1]}
        return
    assert len(placed) == len(list(where()))
    inside = tuple(f'{n}.' for n in placed)
    assert [
        n for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and not n.startswith(inside)
    ] == []


@pytest.mark.parametrize('name', sorted(DERIVED))
def test_parameters_match_the_figure(name, sizes):
    assert sizes(name)['params'] == pytest.approx(DERIVED[name][0], rel=0.02)


@pytest.mark.parametrize('name', sorted(DERIVED))
def test_multiply_adds_match_the_figure(name, sizes):
    assert sizes(name)['flops'] == pytest.approx(DERIVED[name][1], rel=0.02)
