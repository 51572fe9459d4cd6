"""tools/model_converters/paddleclas2mm.py: PaddleClas RedNet checkpoints.

Random weights (BN statistics included) in PaddleClas's layout -- its module
names, BatchNorm ``_mean``/``_variance``, the (in, out) fc weight -- are
pickled as ``paddle.save`` does, converted, and loaded strictly into the
classifier of ``configs/rednet/rednet{depth}_32xb64-warmup-coslr_in1k.py``.
Its logits must equal, in float64, those of a forward written here in torch's
functional ops straight from the Paddle arrays, as PaddleClas's RedNet
computes it: names, layouts and semantics are checked at once. Then the
files the tool must refuse (code-running, truncated, ResNet, wrong keys) and
the files it must not overwrite.
"""
import codecs
import datetime
import hashlib
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmplug_involution.apis import build_config_model
from mmplug_involution.apis import \
    load_config_checkpoint as load_config_checkpoint
from mmplug_involution.runtime import load_checkpoint_file
from .common import load_tool, run_script

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'model_converters' / 'paddleclas2mm.py'
CHECKER = ROOT / 'tools' / 'analysis' / 'check_checkpoint.py'
CONFIG = 'configs/rednet/rednet{}_32xb64-warmup-coslr_in1k.py'
#: PaddleClas's layer_cfg, written out here independently of the tool
STAGE_BLOCKS = {
    26: (1, 2, 4, 1),
    38: (2, 3, 5, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
NAME_TABLE = 'StructuredToParameterName@@'


@pytest.fixture(scope='module')
def tool():
    """The tool's module, to call ``main`` in this process."""
    return load_tool(TOOL)


def _main(tool, *args):
    """``tool.main(args)`` in-process; its exit message (None: success)."""
    try:
        tool.main([str(arg) for arg in args])
    except SystemExit as exit_info:
        assert isinstance(exit_info.code, str), exit_info.code  # status 1
        return exit_info.code
    return None


class _PaddleRedNet:
    """Random PaddleClas RedNet weights: name -> float32 array, in the
    order of PaddleClas's ``state_dict``."""

    def __init__(self, depth: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.params = {}
        self.stem()
        inplanes = 64
        for stage, blocks in enumerate(STAGE_BLOCKS[depth]):
            planes = 64 * 2**stage
            for block in range(blocks):
                self.bottleneck(f'layer{stage + 1}.{block}',
                                inplanes if block == 0 else planes * 4, planes,
                                block == 0)
            inplanes = planes * 4
        # paddle.nn.Linear(2048, 1000): weight (in_features, out_features)
        self.array('fc.weight', (2048, 1000), 2048**-0.5)
        self.array('fc.bias', (1000, ), 0.01)

    def array(self, name, shape, std):
        values = self.rng.standard_normal(shape) * std
        self.params[name] = values.astype(np.float32)

    def conv(self, name, out, inp, kernel):
        self.array(name, (out, inp, kernel, kernel),
                   (inp * kernel * kernel)**-0.5)

    def bn(self, name, channels, scale=1.0):
        self.params[f'{name}.weight'] = self.rng.uniform(
            0.5, 1.5, channels).astype(np.float32) * scale
        self.array(f'{name}.bias', (channels, ), 0.1)
        self.array(f'{name}._mean', (channels, ), 0.2)
        self.params[f'{name}._variance'] = self.rng.uniform(
            0.5, 2.0, channels).astype(np.float32)

    def involution(self, name, channels, kernel):
        groups = channels // 16
        self.conv(f'{name}.conv1.conv.weight', channels // 4, channels, 1)
        self.bn(f'{name}.conv1.bn', channels // 4)
        self.conv(f'{name}.conv2.conv.weight', kernel * kernel * groups,
                  channels // 4, 1)
        self.array(f'{name}.conv2.conv.bias', (kernel * kernel * groups, ),
                   0.1)

    def stem(self):
        self.conv('stem.0.conv.weight', 32, 3, 3)
        self.bn('stem.0.bn', 32)
        self.involution('stem.1', 32, 3)
        self.bn('stem.2', 32)
        self.conv('stem.4.conv.weight', 64, 32, 3)
        self.bn('stem.4.bn', 64)

    def bottleneck(self, name, inplanes, planes, downsample):
        self.conv(f'{name}.conv1.weight', planes, inplanes, 1)
        self.bn(f'{name}.bn1', planes)
        self.involution(f'{name}.conv2', planes, 7)
        self.bn(f'{name}.bn2', planes)
        self.conv(f'{name}.conv3.weight', planes * 4, planes, 1)
        # a small residual branch, as trained ResNets have
        self.bn(f'{name}.bn3', planes * 4, scale=0.3)
        if downsample:
            self.conv(f'{name}.downsample.0.weight', planes * 4, inplanes, 1)
            self.bn(f'{name}.downsample.1', planes * 4)


def _paddle_rednet(depth: int, seed: int = 0, images=None) -> dict:
    """Random PaddleClas RedNet-``depth`` weights, with BN statistics near
    those the layers see for ``images`` (N, 3, H, W), as a trained
    network's are for its data: with arbitrary statistics the deep ones'
    activations overflow."""
    params = _PaddleRedNet(depth, seed).params
    if images is None:
        images = _images(seed)
    calibration = _PaddleForward(params, depth, np.random.default_rng(seed))
    calibration(images)
    return params


def _images(seed, shape=(2, 3, 64, 96)):
    """Float64 images; H and W divisible by 32, as PaddleClas needs."""
    return torch.rand(
        shape,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed))


def _write_pdparams(path, params, protocol=4, container=dict):
    """Pickle ``params`` as ``paddle.save`` does, with its name table."""
    saved = container(params)
    saved[NAME_TABLE] = {
        name: f'param_{index}.w_0'
        for index, name in enumerate(params)
    }
    with open(path, 'wb') as f:
        pickle.dump(saved, f, protocol=protocol)


class _PaddleForward:
    """PaddleClas's RedNet forward in torch's functional ops, straight from
    the Paddle arrays (BN in eval mode, eps 1e-5).

    With ``calibrate`` (a numpy Generator), every BN first sets its
    ``_mean`` and ``_variance`` in ``params`` near the statistics of what it
    is given (perturbed with that generator).
    """

    def __init__(self, params, depth, calibrate=None):
        self.params, self.depth, self.calibrate = params, depth, calibrate

    def __call__(self, x):
        """(N, 3, H, W) -> (N, 1000) logits, in x's dtype."""
        self.p = {
            name: torch.from_numpy(value).to(x.dtype)
            for name, value in self.params.items()
        }
        x = self.conv_bn_relu(x, 'stem.0', stride=2, padding=1)
        x = F.relu(self.bn(self.involution(x, 'stem.1', 3, 1), 'stem.2'))
        x = self.conv_bn_relu(x, 'stem.4', padding=1)
        x = F.max_pool2d(x, 3, 2, 1)
        for stage, blocks in enumerate(STAGE_BLOCKS[self.depth]):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = self.bottleneck(x, f'layer{stage + 1}.{block}', stride,
                                    block == 0)
        features = x.mean((2, 3))  # AdaptiveAvgPool2D(1), flatten
        # paddle.nn.Linear: x @ weight, the weight stored (in, out)
        return F.linear(features, self.p['fc.weight'].T, self.p['fc.bias'])

    def conv_bn_relu(self, x, name, **conv_args):
        """A ``Sequential(conv, bn, activate)``."""
        x = F.conv2d(x, self.p[f'{name}.conv.weight'], **conv_args)
        return F.relu(self.bn(x, f'{name}.bn'))

    def bottleneck(self, x, name, stride, downsample):
        """paddle.vision's BottleneckBlock with the involution as conv2."""
        p = self.p
        out = F.relu(
            self.bn(F.conv2d(x, p[f'{name}.conv1.weight']), f'{name}.bn1'))
        out = self.involution(out, f'{name}.conv2', 7, stride)
        out = F.relu(self.bn(out, f'{name}.bn2'))
        out = self.bn(F.conv2d(out, p[f'{name}.conv3.weight']), f'{name}.bn3')
        if downsample:
            x = F.conv2d(x, p[f'{name}.downsample.0.weight'], stride=stride)
            x = self.bn(x, f'{name}.downsample.1')
        return F.relu(out + x)

    def bn(self, x, name):
        if self.calibrate is not None:
            channels = x.shape[1]
            mean = x.mean((0, 2, 3)).numpy()
            var = x.var((0, 2, 3)).numpy()
            noise = self.calibrate.standard_normal(channels)
            variance = var * self.calibrate.uniform(0.8, 1.25, channels)
            for key, value in (('_mean', mean + 0.1 * var**0.5 * noise),
                               ('_variance', variance + 1e-3)):
                value = value.astype(np.float32)
                self.params[f'{name}.{key}'] = value
                self.p[f'{name}.{key}'] = torch.from_numpy(value).to(x.dtype)
        mean, var, weight, bias = (
            self.p[f'{name}.{key}']
            for key in ('_mean', '_variance', 'weight', 'bias'))
        return F.batch_norm(x, mean, var, weight, bias, False, eps=1e-5)

    def involution(self, x, name, kernel, stride):
        """PaddleClas's Involution.forward: a kernel per output pixel from
        the (average-pooled) input, over the unfolded input, 16 channels a
        group."""
        n, channels = x.shape[:2]
        groups = channels // 16
        source = F.avg_pool2d(x, stride, stride) if stride > 1 else x
        reduced = self.conv_bn_relu(source, f'{name}.conv1')
        weight = F.conv2d(reduced, self.p[f'{name}.conv2.conv.weight'],
                          self.p[f'{name}.conv2.conv.bias'])
        h, w = weight.shape[2:]
        weight = weight.reshape(n, groups, kernel * kernel, h, w).unsqueeze(2)
        patches = F.unfold(
            x, kernel, dilation=1, padding=(kernel - 1) // 2, stride=stride)
        patches = patches.reshape(n, groups, 16, kernel * kernel, h, w)
        return (weight * patches).sum(3).reshape(n, channels, h, w)


def _classifier(depth):
    """The classifier of the depth's ImageNet config, in eval mode."""
    return build_config_model(
        Config.fromfile(str(ROOT / CONFIG.format(depth))))


@pytest.mark.parametrize('depth, protocol, container, in_process', [
    (26, 4, dict, False),
    (38, 2, dict, True),
    (50, 4, OrderedDict, True),
    pytest.param(101, 3, dict, True, marks=pytest.mark.slow),
    pytest.param(152, 4, dict, True, marks=pytest.mark.slow),
])
def test_converted_classifier_predicts_as_paddleclas(tool, tmp_path, capsys,
                                                     depth, protocol,
                                                     container, in_process):
    images = _images(depth)
    params = _paddle_rednet(depth, seed=depth, images=images)
    src = tmp_path / f'RedNet{depth}_pretrained.pdparams'
    _write_pdparams(src, params, protocol, container)
    dst = tmp_path / 'checkpoints' / f'rednet{depth}_in1k.pth'
    if in_process:
        assert _main(tool, src, dst) is None
        stdout = capsys.readouterr().out
    else:
        result = run_script(TOOL, src, dst)
        assert result.returncode == 0, result.stdout + result.stderr
        stdout = result.stdout

    checkpoint = load_checkpoint_file(str(dst), map_location='cpu')
    assert set(checkpoint) == {'state_dict', 'meta'}
    meta = checkpoint['meta']
    assert meta['source'] == src.name
    assert meta['sha256'] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta['arch'] == f'RedNet-{depth}' and meta['depth'] == depth
    assert meta['stem_kernel_size'] == 3
    assert 'paddleclas2mm' in meta['converter']
    assert datetime.date.fromisoformat(meta['date']) <= datetime.date.today()
    state_dict = checkpoint['state_dict']
    assert all(isinstance(v, torch.Tensor) for v in state_dict.values())
    assert state_dict['head.fc.weight'].shape == (1000, 2048)

    model = _classifier(depth)
    expected = model.state_dict()
    assert list(state_dict) == list(expected)  # the model's order too
    parameters = sum(p.numel() for p in model.parameters())
    assert (f'RedNet-{depth}' in stdout
            and f'{len(expected)} tensors' in stdout
            and f'{parameters:,} parameters' in stdout), stdout
    # strict: every key and shape; through the safe loader
    load_config_checkpoint(model, str(dst), CONFIG.format(depth))
    assert all((state_dict[k] == 0).all() for k in expected
               if k.endswith('num_batches_tracked'))

    model.double()
    with torch.no_grad():
        logits = model(images, mode='tensor')
    reference = _PaddleForward(params, depth)(images)
    assert logits.shape == reference.shape == (2, 1000)
    scale = reference.abs().max()
    # the logits depend on the image (not just on the fc bias)
    assert (reference[0] - reference[1]).abs().max() > 0.01 * scale
    torch.testing.assert_close(logits, reference, rtol=1e-9, atol=1e-9 * scale)


@pytest.fixture(scope='module')
def rednet26(tmp_path_factory):
    """(Paddle arrays, path) of a RedNet-26 .pdparams file."""
    params = _paddle_rednet(26, seed=1)
    path = tmp_path_factory.mktemp('paddle') / 'RedNet26_pretrained.pdparams'
    _write_pdparams(path, params)
    return params, path


class _RunsCommand:
    """Unpickled, runs ``function(argument)``."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument, )


def test_a_pickle_that_runs_code_is_refused_and_not_run(
        tool, rednet26, tmp_path):
    params = dict(rednet26[0])
    marker = tmp_path / 'MARKER'
    params['fc.bias'] = _RunsCommand(os.system, f'touch {marker}')
    src = tmp_path / 'RedNet26_pretrained.pdparams'
    _write_pdparams(src, params)
    dst = tmp_path / 'out.pth'
    result = run_script(TOOL, src, dst)
    assert result.returncode != 0
    assert f'would import {os.system.__module__}.system' in result.stderr
    assert 'paddleclas2mm: error:' in result.stderr
    assert not marker.exists() and not dst.exists()

    params['fc.bias'] = _RunsCommand(exec,
                                     f'open({str(marker)!r}, "w").close()')
    _write_pdparams(src, params)
    message = _main(tool, src, dst)
    assert 'would import builtins.exec' in message, message
    assert not marker.exists() and not dst.exists()
    # the payload is live: a plain unpickler runs it
    pickle.loads(src.read_bytes())
    assert marker.exists()


def test_only_latin1_bytes_are_decoded(tool, rednet26, tmp_path):
    """``_codecs.encode`` (how protocol-2 pickles store bytes) is let
    through for the latin-1 codec only."""
    params = dict(rednet26[0])
    src = tmp_path / 'RedNet26_pretrained.pdparams'
    dst = tmp_path / 'out.pth'

    class _Encodes:

        def __reduce__(self):
            return codecs.encode, ('x', 'rot13')

    params['fc.bias'] = _Encodes()
    _write_pdparams(src, params)
    message = _main(tool, src, dst)
    assert "refused: the pickle calls _codecs.encode with 'rot13'" in message
    assert not dst.exists()


def test_truncated_and_foreign_files_are_refused(tool, rednet26, tmp_path):
    data = rednet26[1].read_bytes()
    dst = tmp_path / 'out.pth'
    truncated = tmp_path / 'truncated.pdparams'
    truncated.write_bytes(data[:len(data) // 2])
    text = tmp_path / 'text.pdparams'
    text.write_bytes(b'<html>404 Not Found</html>\n')
    for src in (truncated, text):
        message = _main(tool, src, dst)
        assert 'not a complete PaddlePaddle .pdparams file' in message
        assert not dst.exists()

    torch_file = tmp_path / 'rednet26.pth'
    torch.save({'stem.0.conv.weight': torch.zeros(1)}, torch_file)
    assert 'zip archive' in _main(tool, torch_file, dst)
    # arrays of Python objects are refused even though they unpickle safely
    objects = tmp_path / 'objects.pdparams'
    params = dict(rednet26[0], **{'fc.bias': np.array([1, 'a'], dtype=object)})
    _write_pdparams(objects, params)
    assert 'arrays of Python objects (fc.bias)' in _main(tool, objects, dst)
    assert not dst.exists()


def _resnet50_keys(rng):
    """paddle.vision's ResNet-50 keys (tiny arrays: the names matter)."""
    names = ['conv1.weight'] + [
        f'bn1.{n}' for n in ('weight', 'bias', '_mean', '_variance')
    ]
    for stage, blocks in enumerate(STAGE_BLOCKS[50]):
        for block in range(blocks):
            for i in (1, 2, 3):
                names.append(f'layer{stage + 1}.{block}.conv{i}.weight')
                names += [
                    f'layer{stage + 1}.{block}.bn{i}.{n}'
                    for n in ('weight', 'bias', '_mean', '_variance')
                ]
    names += ['fc.weight', 'fc.bias']
    return {name: rng.standard_normal(2).astype(np.float32) for name in names}


def test_a_resnet_checkpoint_is_refused(tool, tmp_path):
    rng = np.random.default_rng(0)
    dst = tmp_path / 'out.pth'
    vision = tmp_path / 'ResNet50_pretrained.pdparams'
    _write_pdparams(vision, _resnet50_keys(rng))
    message = _main(tool, vision, dst)
    assert 'not a RedNet checkpoint' in message, message
    assert 'ResNet' in message and 'conv1.weight' in message
    # PaddleClas's own ResNet_vd names
    paddleclas = tmp_path / 'ResNet50_vd_pretrained.pdparams'
    _write_pdparams(
        paddleclas, {
            'conv1_1._conv.weight': rng.standard_normal(2).astype(np.float32),
            'conv1_1._batch_norm._mean': np.zeros(2, np.float32)
        })
    message = _main(tool, paddleclas, dst)
    assert 'not a RedNet checkpoint' in message
    assert 'conv1_1._conv.weight' in message
    assert not dst.exists()


def test_missing_left_over_and_misshapen_keys_are_all_listed(
        tool, rednet26, tmp_path):
    params = dict(rednet26[0])
    del params['layer2.1.bn2._variance'], params['stem.1.conv2.conv.bias']
    params['layer2.1.conv2.weight'] = np.zeros((128, 128, 3, 3), np.float32)
    params['fc.weight_moment1_0'] = np.zeros((2048, 1000), np.float32)
    # a 7x7 stem involution (the detection layout) and a wrong conv
    params['stem.1.conv2.conv.weight'] = np.zeros((98, 8, 1, 1), np.float32)
    params['layer3.0.conv1.weight'] = np.zeros((128, 512, 1, 1), np.float32)
    src = tmp_path / 'RedNet26_edited.pdparams'
    _write_pdparams(src, params)
    dst = tmp_path / 'out.pth'
    message = _main(tool, src, dst)
    assert not dst.exists()
    assert 'RedNet-26' in message and 'was not written' in message
    missing = message.index('missing (2)')
    left_over = message.index('left over (2)')
    wrong = message.index('wrong shape (2)')
    assert missing < left_over < wrong
    block = message[missing:left_over]
    assert 'layer2.1.bn2._variance' in block
    assert 'stem.1.conv2.conv.bias' in block
    block = message[left_over:wrong]
    assert 'layer2.1.conv2.weight' in block and 'fc.weight_moment1_0' in block
    block = message[wrong:]
    assert ('stem.1.conv2.conv.weight: RedNet-26 needs (18, 8, 1, 1), the '
            'file has (98, 8, 1, 1)') in block
    assert ('layer3.0.conv1.weight: RedNet-26 needs (256, 512, 1, 1), the '
            'file has (128, 512, 1, 1)') in block

    # blocks per stage that are no RedNet's
    params = _paddle_rednet(50)
    for name in [name for name in params if name.startswith('layer3.5.')]:
        del params[name]
    _write_pdparams(src, params)
    message = _main(tool, src, dst)
    assert '(3, 4, 5, 3) blocks' in message and 'no RedNet depth' in message
    assert not dst.exists()


def test_an_existing_output_is_kept_without_overwrite(tool, rednet26,
                                                      tmp_path):
    src = rednet26[1]
    dst = tmp_path / 'rednet26_in1k.pth'
    dst.write_bytes(b'an earlier checkpoint')
    message = _main(tool, src, dst)
    assert f'{dst} exists' in message and '--overwrite' in message
    assert dst.read_bytes() == b'an earlier checkpoint'
    # a failed conversion with --overwrite keeps it too
    broken = tmp_path / 'broken.pdparams'
    broken.write_bytes(src.read_bytes()[:1000])
    assert 'not a complete' in _main(tool, broken, dst, '--overwrite')
    assert dst.read_bytes() == b'an earlier checkpoint'
    assert 'replace the input' in _main(tool, src, src, '--overwrite')

    assert _main(tool, src, dst, '--overwrite') is None
    state_dict = load_checkpoint_file(str(dst))['state_dict']
    assert torch.equal(state_dict['head.fc.weight'],
                       torch.from_numpy(rednet26[0]['fc.weight'].T))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_check_checkpoint_reports_the_conversion_complete(
        tool, rednet26, tmp_path):
    dst = tmp_path / 'rednet26_in1k.pth'
    assert _main(tool, rednet26[1], dst) is None
    assert not zipfile.is_zipfile(rednet26[1]) and zipfile.is_zipfile(dst)
    result = run_script(CHECKER, CONFIG.format(26), dst, '--part', 'model')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'missing: 0' in result.stdout
    assert 'unexpected: 0' in result.stdout
    assert 'shape mismatches: 0' in result.stdout
