"""tools/model_converters/dcd2mm.py: the DCD authors' ImageNet checkpoints.

The authors' models, re-implemented independently with their module names
(:mod:`tests.models.dcd_authors`), get random weights and BN statistics and
are saved as their ``main.py`` saves them (``epoch``, ``arch``,
``state_dict``, ``best_prec1`` as a tensor, an SGD ``optimizer`` state), in
the variants the published files may take: keys under ``module.`` or not,
the classifier after a Dropout (``classifier.1``) or not, torch's zip or
legacy format (with CUDA tensors, as saved in training), with or without
``arch``. Each is converted and loaded strictly into the model of the config
the tool names; its logits must equal the authors' forward in float64, and
do not once one mapping is broken. Then the files the tool must refuse, all
with its own message and nothing written, and a seeded fuzz of what it
reads.
"""
import copy
import datetime
import hashlib
import io
import os
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple, Optional
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmplug_involution.apis import build_config_model, load_config_checkpoint
from mmplug_involution.runtime import CheckpointError, load_checkpoint_file
from ..models import dcd_authors
from .common import load_tool, run_script

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'model_converters' / 'dcd2mm.py'
CONFIGS = 'configs/dynamic_conv/'


class Case(NamedTuple):
    """One of the authors' models and how its checkpoint is saved."""

    arch: str  # their main.py's --arch
    build: object  # dropout -> the reference model
    config: str
    parameters: int  # their code's count
    meta: dict  # what the output's meta says of the model
    dropout: Optional[float]  # the classifier after a Dropout: classifier.1
    module_prefix: bool  # saved from DataParallel
    legacy: bool  # torch's pre-1.6 format, as their torch 1.0 wrote
    gpu: bool  # (legacy) its tensors on CUDA, as their training saved them
    with_arch: bool  # without: the shapes decide
    bare: bool  # a bare state dict (no epoch, no best_prec1)
    in_process: bool  # False: the tool runs as a process


def _mobilenet_v2(width_mult, fc_squeeze):
    return lambda dropout: dcd_authors.MobileNetV2_dcd(
        width_mult=width_mult, fc_squeeze=fc_squeeze, dropout=dropout)


CASES = {
    'resnet18':
    Case(
        arch='resnet18_dcd',
        build=lambda dropout: dcd_authors.resnet18_dcd(dropout=dropout),
        config=CONFIGS + 'resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py',
        parameters=14_703_332,
        meta={},
        dropout=0.1,
        module_prefix=True,
        legacy=True,
        gpu=True,
        with_arch=True,
        bare=False,
        in_process=False),
    'resnet50':
    Case(
        arch='resnet50_dcd',
        build=lambda dropout: dcd_authors.resnet50_dcd(dropout=dropout),
        config=CONFIGS + 'resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py',
        parameters=29_835_056,
        meta={},
        dropout=None,
        module_prefix=False,
        legacy=False,
        gpu=False,
        with_arch=False,
        bare=True,
        in_process=True),
    'mobilenet_v2':
    Case(
        arch='mobilenetv2_dcd',
        build=_mobilenet_v2(1.0, 16),
        config=CONFIGS + 'mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py',
        parameters=5_720_028,
        meta=dict(width_mult=1.0, fc_squeeze=16),
        dropout=0.2,
        module_prefix=True,
        legacy=False,
        gpu=False,
        with_arch=False,
        bare=False,
        in_process=True),
    'mobilenet_v2_050':
    Case(
        arch='mobilenetv2_dcd',
        build=_mobilenet_v2(0.5, 8),
        config=(CONFIGS +
                'mobilenet-v2-050-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py'),
        parameters=3_056_616,
        meta=dict(width_mult=0.5, fc_squeeze=8),
        dropout=None,
        module_prefix=False,
        legacy=True,
        gpu=False,
        with_arch=True,
        bare=False,
        in_process=True),
}
EPOCH, BEST_PREC1 = 120, 76.125


def _images(seed: int = 0) -> torch.Tensor:
    """Small random images: the models pool globally at the end."""
    return torch.rand(
        2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def tool():
    """The tool's module, to call its functions in this process."""
    return load_tool(TOOL)


@pytest.fixture(scope='module')
def references():
    """name -> the case's reference model with random weights and BN
    statistics from :func:`_images` (built once, on first use)."""
    built = {}

    def get(name: str) -> torch.nn.Module:
        if name not in built:
            case = CASES[name]
            built[name] = dcd_authors.randomize_(
                case.build(case.dropout),
                seed=list(CASES).index(name),
                images=_images())
        return built[name]

    return get


def _optimizer_state(model: torch.nn.Module) -> dict:
    """A real SGD state (momentum buffers after one step of zero
    gradients, which leaves the weights as they are)."""
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9)
    for parameter in parameters:
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    for parameter in parameters:
        parameter.grad = None
    return optimizer.state_dict()


def _authors_checkpoint(model: torch.nn.Module, case: Case) -> dict:
    """What the authors' main.py saves (or, ``bare``, the state dict)."""
    state_dict = model.state_dict()
    if case.module_prefix:
        state_dict = OrderedDict(
            (f'module.{key}', value) for key, value in state_dict.items())
    if case.bare:
        return state_dict
    checkpoint = dict(
        epoch=EPOCH,
        state_dict=state_dict,
        best_prec1=torch.tensor(BEST_PREC1),
        optimizer=_optimizer_state(model))
    if case.with_arch:
        checkpoint['arch'] = case.arch
    return checkpoint


def _save(path: Path, checkpoint, legacy: bool = False, gpu: bool = False):
    """``torch.save`` to ``path``; ``legacy``: in the pre-1.6 format,
    ``gpu``: as torch 1.0 wrote CUDA tensors (location ``cuda:0``, storage
    types ``torch.cuda.*Storage``), which this machine need not have."""
    if not gpu:
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
        return path
    assert legacy
    buffer = io.BytesIO()
    with mock.patch.object(torch.serialization, 'location_tag',
                           lambda storage: 'cuda:0'):
        torch.save(checkpoint, buffer, _use_new_zipfile_serialization=False)
    # protocol 2's GLOBAL opcode: 'c' module '\n' name '\n'
    data, count = re.subn(rb'ctorch\n(\w+Storage)\n', rb'ctorch.cuda\n\1\n',
                          buffer.getvalue())
    assert count and b'cuda:0' in data
    path.write_bytes(data)
    return path


def _main(tool, *args):
    """``tool.main(args)`` in-process; its exit message (None: success)."""
    try:
        tool.main([str(arg) for arg in args])
    except SystemExit as exit_info:
        assert isinstance(exit_info.code, str), exit_info.code  # status 1
        return exit_info.code
    return None


def _logits(model: torch.nn.Module, images: torch.Tensor, converted=False):
    """float64 logits of a copy of ``model`` (the authors' or, converted,
    ours)."""
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        if converted:
            return model(images.double(), mode='tensor')
        return model(images.double())


def _assert_same_logits(logits, reference):
    scale = reference.abs().max()
    # the logits depend on the image, not just on the classifier's bias
    assert (reference[0] - reference[1]).abs().max() > 0.01 * scale
    torch.testing.assert_close(logits, reference, rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize('name', list(CASES))
def test_converted_classifier_predicts_as_the_authors(tool, references,
                                                      tmp_path, capsys, name):
    case = CASES[name]
    reference = references(name)
    src = _save(tmp_path / f'{case.arch}.pth.tar',
                _authors_checkpoint(reference, case), case.legacy, case.gpu)
    dst = tmp_path / 'checkpoints' / f'{name}-dcd_in1k.pth'
    if case.in_process:
        assert _main(tool, src, dst) is None
        stdout = capsys.readouterr().out
    else:
        result = run_script(TOOL, src, dst)
        assert result.returncode == 0, result.stdout + result.stderr
        stdout = result.stdout

    checkpoint = load_checkpoint_file(str(dst), map_location='cpu')
    assert set(checkpoint) == {'state_dict', 'meta'}
    meta = checkpoint['meta']
    assert meta['config'] == case.config
    assert meta['source'] == src.name
    assert meta['sha256'] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta['arch'] == case.arch and 'dcd2mm' in meta['converter']
    assert datetime.date.fromisoformat(meta['date']) <= datetime.date.today()
    for key, value in case.meta.items():
        assert meta[key] == value
    if case.bare:
        assert 'epoch' not in meta and 'best_prec1' not in meta
    else:
        assert meta['epoch'] == EPOCH
        assert meta['best_prec1'] == pytest.approx(BEST_PREC1)
        assert isinstance(meta['best_prec1'], float)

    model = build_config_model(Config.fromfile(str(ROOT / meta['config'])))
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == case.parameters
    assert list(checkpoint['state_dict']) == list(model.state_dict())
    assert (case.config in stdout
            and f'{len(checkpoint["state_dict"])} tensors' in stdout
            and f'{parameters:,} parameters' in stdout
            and 'check_checkpoint.py' in stdout), stdout
    # strict: every key and shape
    load_config_checkpoint(model, str(dst), meta['config'])

    images = _images()
    _assert_same_logits(
        _logits(model, images, converted=True), _logits(reference, images))


def _load_converted(state_dict, config: str) -> torch.nn.Module:
    model = build_config_model(Config.fromfile(str(ROOT / config)))
    model.load_state_dict(state_dict, strict=True)
    return model


def test_a_broken_mapping_is_caught_by_the_logits(tool, references,
                                                  monkeypatch):
    """The logits are what catches a mapping between parts of the same
    shapes: BN1 and BN2 of every dynamic conv swapped still loads."""
    case = CASES['mobilenet_v2_050']
    reference = references('mobilenet_v2_050')
    images = _images()
    expected = _logits(reference, images)
    loaded = {'arch': case.arch, 'state_dict': reference.state_dict()}

    target, state_dict = tool.convert(loaded)
    _assert_same_logits(
        _logits(
            _load_converted(state_dict, target.config), images,
            converted=True), expected)

    monkeypatch.setitem(tool.DYNAMIC_CONV_NAMES, 'bn1', 'fusion_norm')
    monkeypatch.setitem(tool.DYNAMIC_CONV_NAMES, 'bn2', 'q_norm')
    target, state_dict = tool.convert(loaded)  # every key and shape fits
    logits = _logits(
        _load_converted(state_dict, target.config), images, converted=True)
    scale = expected.abs().max()
    assert not torch.allclose(logits, expected, rtol=1e-3, atol=1e-3 * scale)
    with pytest.raises(AssertionError):
        _assert_same_logits(logits, expected)


@pytest.fixture(scope='module')
def small_file(references, tmp_path_factory):
    """(the authors' checkpoint dict, its zip file, its legacy file) of
    MobileNetV2 x0.5, the smallest model."""
    case = CASES['mobilenet_v2_050']
    checkpoint = _authors_checkpoint(references('mobilenet_v2_050'), case)
    folder = tmp_path_factory.mktemp('dcd')
    return (checkpoint, _save(folder / 'mv2x0.5_dcd.pth.tar', checkpoint),
            _save(folder / 'mv2x0.5_dcd_legacy.pth.tar', checkpoint, True))


def test_missing_left_over_and_misshapen_keys_are_all_listed(
        tool, small_file, tmp_path):
    state_dict = dict(small_file[0]['state_dict'])
    del state_dict['features.3.conv.0.bn1.running_var']
    del state_dict['classifier.0.cls.bias']
    state_dict['features.3.conv.0.extra.weight'] = torch.zeros(3)
    state_dict['features.5.conv.6.fc_phi.weight'] = torch.zeros(7, 7)
    state_dict['conv.1.weight'] = torch.zeros(1280, dtype=torch.int64)
    src = _save(tmp_path / 'mv2x0.5_edited.pth.tar',
                dict(small_file[0], state_dict=state_dict))
    dst = tmp_path / 'out.pth'
    message = _main(tool, src, dst)
    assert not dst.exists()
    assert message.startswith(
        'dcd2mm: error:') and 'was not written' in message
    assert 'mobilenetv2_dcd (width 0.5, fc_squeeze 8)' in message
    assert '5 differences' in message
    missing = message.index('missing (2)')
    left_over = message.index('left over (1)')
    wrong = message.index('wrong shape (2)')
    assert missing < left_over < wrong
    block = message[missing:left_over]
    assert 'features.3.conv.0.bn1.running_var' in block
    assert 'classifier.0.cls.bias' in block
    assert 'features.3.conv.0.extra.weight' in message[left_over:wrong]
    block = message[wrong:]
    assert re.search(
        r'features\.5\.conv\.6\.fc_phi\.weight: .* needs \(\d+, \d+\), the '
        r'file has \(7, 7\)', block), block
    assert 'conv.1.weight: ' in block and 'torch.int64' in block


def test_models_without_a_config_are_refused_by_name(tool, small_file,
                                                     tmp_path):
    # their code's default MobileNetV2: x1.0 with fc_squeeze 8
    default = dcd_authors.MobileNetV2_dcd().state_dict()
    for loaded in ({
            'arch': 'mobilenetv2_dcd',
            'state_dict': default
    }, default):
        with pytest.raises(tool.ConversionError) as error:
            tool.convert(loaded)
        message = str(error.value)
        assert 'mobilenetv2_dcd (width 1.0, fc_squeeze 8)' in message
        assert 'no config' in message and '7,452,088 parameters' in message
        assert 'squeeze_ratio=8' in message
    src = _save(tmp_path / 'mv2x1.0_fc8.pth.tar', {
        'arch': 'mobilenetv2_dcd',
        'state_dict': default
    })
    dst = tmp_path / 'out.pth'
    assert 'fc_squeeze 8), which no config' in _main(tool, src, dst)
    assert not dst.exists()

    # an arch the authors have, with no config here
    checkpoint = small_file[0]
    for arch in ('resnet34_dcd', 'resnet101_dcd'):
        with pytest.raises(tool.ConversionError) as error:
            tool.convert(dict(checkpoint, arch=arch))
        message = str(error.value)
        assert f"its arch is '{arch}', which no config" in message
        assert 'resnet18_dcd, resnet50_dcd, mobilenetv2_dcd' in message
    # the blocks of a ResNet-34 without its arch: the closest is named
    resnet34 = dcd_authors.ResNet_dcd(dcd_authors.BasicBlock_dy, [3, 4, 6, 3])
    with pytest.raises(tool.ConversionError) as error:
        tool.convert(resnet34.state_dict())
    message = str(error.value)
    assert 'the closest is resnet18_dcd' in message
    assert ('(3, 4, 6, 3) blocks per stage, resnet18_dcd (2, 2, 2, 2)'
            in message)
    assert 'layer1.2.conv1.fc_phi.weight' in message  # left over


def test_an_arch_the_weights_contradict_is_refused(tool, small_file):
    with pytest.raises(tool.ConversionError) as error:
        tool.convert(dict(small_file[0], arch='resnet18_dcd'))
    message = str(error.value)
    assert 'does not fit its arch' in message
    assert ("its keys and shapes are mobilenetv2_dcd (width 0.5, fc_squeeze "
            "8)'s") in message and 'disagree' in message


def test_files_that_are_no_dcd_checkpoint_are_refused(tool, tmp_path):
    dst = tmp_path / 'out.pth'
    resnet = tmp_path / 'resnet50.pth'
    _save(resnet, {'conv1.weight': torch.zeros(1), 'fc.bias': torch.zeros(2)})
    message = _main(tool, resnet, dst)
    assert "not a checkpoint of the DCD authors' models" in message
    assert 'conv1.weight' in message
    converted = tmp_path / 'converted.pth'
    _save(converted, {'state_dict': {'backbone.conv1.weight': torch.zeros(1)}})
    assert 'converted already' in _main(tool, converted, dst)
    for loaded, words in (([1, 2], 'holds a list'), ({
            'arch': 3
    }, r'arch entry is 3 \(type int\)'), ({
            'arch': 'resnet18_dcd',
            'epoch': 1
    }, 'without a state_dict entry'), ({
            'state_dict': [1]
    }, 'state_dict entry is a list')):
        with pytest.raises(tool.ConversionError, match=words):
            tool.convert(loaded)
    assert not dst.exists()


class _RunsCommand:
    """Unpickled, runs ``function(argument)``."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument, )


def test_a_pickle_that_runs_code_is_refused_and_not_run(tool, tmp_path):
    marker = tmp_path / 'MARKER'
    src = _save(
        tmp_path / 'resnet50_dcd.pth.tar', {
            'arch': 'resnet50_dcd',
            'state_dict': {
                'conv1.weight': torch.zeros(1)
            },
            'best_prec1': _RunsCommand(os.system, f'touch {marker}')
        })
    dst = tmp_path / 'out.pth'
    message = _main(tool, src, dst)
    assert message.startswith('dcd2mm: error: Refused to load'), message
    assert f'would import {os.system.__module__}.system' in message
    assert not marker.exists() and not dst.exists()
    # the payload is live: torch.load without weights_only runs it
    torch.load(src, weights_only=False)
    assert marker.exists()


def test_truncated_and_foreign_files_are_refused(tool, small_file, tmp_path):
    dst = tmp_path / 'out.pth'
    files = {}
    for label, good in (('zip', small_file[1]), ('legacy', small_file[2])):
        data = good.read_bytes()
        files[f'{label} truncated'] = data[:len(data) // 2]
    files['html'] = b'<html>404 Not Found</html>\n'
    files['empty'] = b''
    for label, data in files.items():
        src = tmp_path / 'broken.pth.tar'
        src.write_bytes(data)
        message = _main(tool, src, dst)
        assert message.startswith('dcd2mm: error:'), (label, message)
        assert 'corrupt or truncated' in message, (label, message)
        assert 'was not written' in message and not dst.exists()


def test_an_existing_output_is_kept_without_overwrite(tool, small_file,
                                                      tmp_path):
    src = small_file[1]
    dst = tmp_path / 'mv2x0.5-dcd_in1k.pth'
    dst.write_bytes(b'an earlier checkpoint')
    message = _main(tool, src, dst)
    assert f'{dst} exists' in message and '--overwrite' in message
    assert dst.read_bytes() == b'an earlier checkpoint'
    # a failed conversion with --overwrite keeps it too
    broken = tmp_path / 'broken.pth.tar'
    broken.write_bytes(src.read_bytes()[:1000])
    assert 'corrupt' in _main(tool, broken, dst, '--overwrite')
    assert dst.read_bytes() == b'an earlier checkpoint'
    assert 'replace the input' in _main(tool, src, src, '--overwrite')
    assert 'is a folder' in _main(tool, src, tmp_path)
    assert 'not found' in _main(tool, tmp_path / 'none.pth.tar', dst)

    assert _main(tool, src, dst, '--overwrite') is None
    state_dict = load_checkpoint_file(str(dst))['state_dict']
    assert torch.equal(
        state_dict['head.phi.weight'],
        small_file[0]['state_dict']['classifier.0.fc_phi.weight'])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


#: values of the wrong kind for a tensor of ``shape``
_WRONG_VALUES = (
    lambda shape: None,
    lambda shape: 3,
    lambda shape: 'weights',
    lambda shape: [1.0, 2.0],
    lambda shape: {
        'weight': torch.zeros(shape)
    },
    lambda shape: np.zeros(shape, np.float32),
    lambda shape: torch.zeros(shape, dtype=torch.int64),
    lambda shape: torch.zeros(shape, dtype=torch.bool),
    lambda shape: torch.zeros(shape, dtype=torch.complex64),
)
#: values an ``epoch`` or ``best_prec1`` entry might have
_FIELD_VALUES = (None, 'x', 3, 1.5, True, [1], torch.tensor(2.5),
                 torch.zeros(3), torch.tensor(1 + 2j), np.float64(1.0))


def _reshaped(value: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A tensor of another shape: one size changed, a size added or the
    sizes dropped."""
    shape = list(value.shape)
    choice = rng.randrange(3)
    if choice == 0 and shape:
        axis = rng.randrange(len(shape))
        shape[axis] = max(shape[axis] + rng.choice((-1, 1, 5)), 0)
        if shape[axis] == value.shape[axis]:
            shape[axis] += 1
    elif choice == 1 or not shape:
        shape.insert(rng.randrange(len(shape) + 1), rng.choice((1, 2)))
    else:
        shape = [value.numel() + 1]
    return torch.zeros(shape, dtype=value.dtype)


def _mutate(state_dict: dict, rng: random.Random) -> dict:
    """``state_dict`` with 1-4 random changes: keys deleted, renamed or
    added, values reshaped, of another kind or dtype, or float64 (which
    still converts)."""
    state_dict = dict(state_dict)
    for _ in range(rng.randint(1, 4)):
        key = rng.choice([key for key in state_dict if isinstance(key, str)])
        value = state_dict[key]
        what = rng.choice(
            ('delete', 'rename', 'reshape', 'add', 'type', 'float64'))
        if what == 'delete':
            del state_dict[key]
        elif what == 'rename':
            new = rng.choice((key + '_', key.replace('.', '._',
                                                     1), f'module.{key}',
                              key.replace('bn1', 'bn3')))
            state_dict[new if new not in state_dict else key + '.x'] = \
                state_dict.pop(key)
        elif what == 'add':
            new = rng.choice(
                (f'features.{rng.randrange(30)}.conv.{rng.randrange(9)}.'
                 'fc_extra.weight', 'classifier.0.cls.scale',
                 rng.randrange(100), 'optimizer', ''))
            state_dict.setdefault(new, torch.zeros(rng.randrange(1, 4)))
        elif not isinstance(value, torch.Tensor):
            continue
        elif what == 'reshape':
            state_dict[key] = _reshaped(value, rng)
        elif what == 'type':
            state_dict[key] = rng.choice(_WRONG_VALUES)(tuple(value.shape))
        elif value.dtype.is_floating_point:
            state_dict[key] = value.double()
    return state_dict


def _changes(original: dict, mutated: dict) -> list:
    """The keys a refusal of ``mutated`` must name: missing, left over,
    or of another shape or kind of dtype than in ``original`` (a float
    where a float was, an integer for the batch counts)."""
    names = [key for key in original if key not in mutated]
    names += [str(key) for key in mutated if key not in original]
    for key, value in original.items():
        new = mutated.get(key)
        if key not in mutated:
            continue
        if not isinstance(new, torch.Tensor) or new.shape != value.shape:
            names.append(key)
        elif value.dtype.is_floating_point != new.dtype.is_floating_point \
                or new.dtype in (torch.bool, torch.complex64):
            names.append(key)
    return names


def test_fuzzed_state_dicts_convert_exactly_or_are_refused(tool, small_file):
    """Random mutations of the keys, shapes and kinds of a checkpoint's
    entries, through the tool's conversion: each converts to exactly the
    file's tensors or is refused with a ConversionError that lists every
    change; nothing else is raised."""
    checkpoint = small_file[0]
    target, good = tool.convert(checkpoint)
    theirs = {  # our key -> the authors'
        ours: key
        for key, (ours, _) in tool.expected_keys(target, 0).items()
    }
    failures, refused, converted = [], 0, 0
    for seed in range(400):
        rng = random.Random(seed)
        state_dict = _mutate(checkpoint['state_dict'], rng)
        names = _changes(checkpoint['state_dict'], state_dict)
        if rng.random() < 0.3 and all(isinstance(k, str) for k in state_dict):
            state_dict = {f'module.{k}': v for k, v in state_dict.items()}
        loaded = dict(
            checkpoint,
            state_dict=state_dict,
            epoch=rng.choice(_FIELD_VALUES),
            best_prec1=rng.choice(_FIELD_VALUES))
        if rng.random() < 0.3:
            del loaded['arch']  # the shapes decide
        elif rng.random() < 0.1:
            loaded = state_dict
        try:
            fields = tool.checkpoint_fields(loaded)
            assert set(fields) <= {'epoch', 'best_prec1'}
            target, result = tool.convert(loaded)
            stripped = {k.replace('module.', '', 1): v
                        for k, v in state_dict.items()} \
                if all(k.startswith('module.') for k in state_dict) \
                else state_dict
        except tool.ConversionError as error:
            refused += 1
            # each name on a line of its own (wrong ones: 'key: needs ...')
            listed = {
                line.strip().split(': ')[0]
                for line in str(error).splitlines()
            }
            unlisted = [name for name in names if name not in listed]
            if not names or unlisted:
                failures.append(f'seed {seed}: {names} refused, not listing '
                                f'{unlisted}: {error}')
        except Exception as error:  # a traceback: the tool's bug
            failures.append(f'seed {seed}: {type(error).__name__}: {error}')
        else:
            converted += 1
            if names:
                failures.append(f'seed {seed}: {names} converted')
            elif list(result) != list(good) or not all(
                    result[key] is stripped[theirs[key]] for key in good):
                failures.append(f'seed {seed}: not the file\'s tensors')
    assert not failures, '\n'.join(failures[:10])
    assert refused > 250 and converted > 20, (refused, converted)


def test_fuzzed_files_convert_exactly_or_are_refused(tool, small_file,
                                                     tmp_path):
    """Truncations and overwritten spans of a zip and a legacy file,
    through ``main``: the tool's own message and no file, or (a legacy
    file has no checksums) exactly what the damaged file holds."""
    cases = []
    for label, path in (('zip', small_file[1]), ('legacy', small_file[2])):
        data = path.read_bytes()
        rng = random.Random(label)
        for _ in range(8):
            offset = rng.randrange(len(data))
            cases.append((f'{label} truncated at {offset}', data[:offset]))
        for _ in range(10):
            damaged = bytearray(data)
            # half of them in the first KiB: headers, the pickle's start
            end = 1024 if rng.random() < 0.5 else len(data)
            offset, length = rng.randrange(end), rng.randint(1, 16)
            damaged[offset:offset + length] = rng.randbytes(
                len(damaged[offset:offset + length]))
            cases.append(
                (f'{label} overwritten at {offset}+{length}', bytes(damaged)))
    src, dst = tmp_path / 'damaged.pth.tar', tmp_path / 'out.pth'
    failures, outcomes = [], {'refused': 0, 'converted': 0}
    for what, data in cases:
        src.write_bytes(data)
        try:
            message = _main(tool, src, dst)
        except Exception as error:  # a traceback: the tool's bug
            failures.append(f'{what}: {type(error).__name__}: {error}')
            continue
        if message is not None:
            outcomes['refused'] += 1
            if not message.startswith('dcd2mm: error:') or dst.exists():
                failures.append(f'{what}: {message[:200]}')
            continue
        outcomes['converted'] += 1
        try:
            loaded = load_checkpoint_file(str(src), map_location='cpu')
        except CheckpointError as error:
            failures.append(f'{what}: converted, but does not load: {error}')
            continue
        _, expected = tool.convert(loaded)
        written = load_checkpoint_file(str(dst))['state_dict']
        if list(written) != list(expected) or not all(
                torch.equal(written[key], expected[key]) for key in expected):
            failures.append(f'{what}: converted to other values')
        dst.unlink()
    assert not failures, '\n'.join(failures[:10])
    assert outcomes['refused'] >= 16 and outcomes['converted'], outcomes


def test_the_converters_share_their_checks(tool):
    """Both converters raise the shared ConversionError (paddleclas2mm's
    tests check its own behaviour)."""
    from mmplug_involution.apis import ConversionError
    paddleclas2mm = load_tool(TOOL.parent / 'paddleclas2mm.py')
    assert tool.ConversionError is ConversionError
    assert paddleclas2mm.ConversionError is ConversionError
    assert issubclass(paddleclas2mm.UnsafePickleError, ConversionError)


def test_the_detector_config_starts_from_the_converted_resnet50(
        tool, references, tmp_path):
    """The fine-tuning route: mask-rcnn_r50-dcd-authors_fpn_1x_coco.py's
    backbone, initialised (init_cfg Pretrained, prefix backbone.) from a
    converted resnet50_dcd checkpoint, holds every converted tensor."""
    from mmengine.registry import DefaultScope
    case = CASES['resnet50']
    src = _save(tmp_path / 'resnet50_dcd.pth.tar',
                _authors_checkpoint(references('resnet50'), case))
    dst = tmp_path / 'resnet50-dcd_in1k.pth'
    assert _main(tool, src, dst) is None
    cfg = Config.fromfile(
        str(ROOT / 'configs' / 'dynamic_conv' /
            'mask-rcnn_r50-dcd-authors_fpn_1x_coco.py'))
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'checkpoints/resnet50-dcd_in1k.pth'
    cfg.model.backbone.init_cfg.checkpoint = str(dst)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        detector = build_config_model(cfg)
    detector.backbone.init_weights()
    converted = load_checkpoint_file(str(dst))['state_dict']
    backbone = detector.backbone.state_dict()
    assert {f'backbone.{k}'
            for k in backbone
            } == {k
                  for k in converted if k.startswith('backbone.')}
    for key, value in backbone.items():
        assert torch.equal(value, converted[f'backbone.{key}']), key
