"""Seeded fuzzing of every reader of a file a user points at.

Each bad file must either load exactly what was saved or raise one of the
project's errors; any other exception (or a load that differs) fails with
the seed and offset that made the file. The files: random bytes of varied
sizes (bare, behind a legacy checkpoint's header, behind a zip header, and
pickle opcode soup), a checkpoint written by a short training run truncated
at random offsets (zip and legacy format), and the same checkpoint with
random spans overwritten.
"""
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner.checkpoint import _load_checkpoint

from mmplug_involution.apis import \
    load_config_checkpoint as load_config_checkpoint
from mmplug_involution.layers import Involution
from mmplug_involution.runtime import CheckpointError
from ..tools.common import TOOLS, load_tool
from .test_checkpoint_hook import _runner

paddleclas2mm = load_tool(TOOLS / 'model_converters' / 'paddleclas2mm.py')

#: what torch's legacy format starts with: protocol 2, then the magic number
_LEGACY_MAGIC = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
_ZIP_HEADER = b'PK\x03\x04'


class _InvolutionModel(BaseModel):
    """A 1x1 conv into an involution: the checkpoint holds the package's
    layer and its BN buffers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 1)
        self.involution = Involution(16, kernel_size=3)

    def forward(self, x, y, mode='loss'):
        out = self.involution(self.stem(x[:, None, None, :])).mean((1, 2, 3))
        if mode == 'loss':
            return dict(loss=((out - y[:, 0])**2).mean())
        return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(zip checkpoint, legacy re-save of it, what both hold)."""
    work_dir = tmp_path_factory.mktemp('fuzz_run')
    _runner(work_dir, max_iters=2, model_class=_InvolutionModel).train()
    checkpoint = work_dir / 'iter_2.pth'
    saved = _load_checkpoint(str(checkpoint), map_location='cpu')
    assert any(key.startswith('involution.') for key in saved['state_dict'])
    legacy = work_dir / 'iter_2_legacy.pth'
    torch.save(saved, legacy, _use_new_zipfile_serialization=False)
    return checkpoint, legacy, saved


def _same(a, b) -> bool:
    """Whether two loaded checkpoints hold the same values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if hasattr(a, '__dict__'):  # HistoryBuffer: its data, not its methods

        def data(obj):
            return {
                key: value
                for key, value in vars(obj).items()
                if not isinstance(value, dict)
                or not all(map(callable, value.values()))
            }

        return _same(data(a), data(b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def _random_bytes(rng: random.Random) -> bytes:
    """1 B to 70 kB, log-uniform, bare or behind a checkpoint's header."""
    size = int(round(10**rng.uniform(0, np.log10(70_000))))
    body = rng.randbytes(size)
    kind = rng.randrange(4)
    if kind == 1:
        return _LEGACY_MAGIC + body
    if kind == 2:
        return _ZIP_HEADER + body
    if kind == 3:  # opcodes the unpickler knows, with random arguments
        opcodes = b'()]}.N\x88\x89KMJGX\x8c\x94hjqrstuabe0120\x85\x86\x87Q'
        return _LEGACY_MAGIC + bytes(
            rng.choice(opcodes) if rng.random() < 0.7 else rng.randrange(256)
            for _ in range(size))
    return body


def _cases(trained):
    """(what was done, seed or offset, bytes) for every fuzzed file."""
    checkpoint, legacy, _ = trained
    good, good_legacy = checkpoint.read_bytes(), legacy.read_bytes()
    for seed in range(300):
        yield f'random bytes, seed {seed}', _random_bytes(random.Random(seed))
    rng = random.Random(1)
    for data, name in ((good, 'zip'), (good_legacy, 'legacy')):
        for _ in range(100):
            offset = rng.randrange(len(data))
            yield f'{name} checkpoint truncated at offset {offset}', \
                data[:offset]
    for data, name in ((good, 'zip'), (good_legacy, 'legacy')):
        for seed in range(100):
            damaged, spans = bytearray(data), []
            span_rng = random.Random(seed)
            for _ in range(span_rng.randint(1, 3)):
                offset = span_rng.randrange(len(data))
                length = span_rng.randint(1, 64)
                damaged[offset:offset + length] = span_rng.randbytes(
                    len(damaged[offset:offset + length]))
                spans.append(f'{offset}+{length}')
            yield (f'{name} checkpoint overwritten at {", ".join(spans)} '
                   f'(seed {seed})'), bytes(damaged)


def _check_all(cases, tmp_path, load, errors, expected=None):
    """Runs ``load`` on each case; returns what went wrong, one line each."""
    wrong = []
    path = tmp_path / 'fuzzed.pth'
    for what, content in cases:
        path.write_bytes(content)
        try:
            loaded = load(str(path))
        except errors as error:
            if str(path) not in str(error):
                wrong.append(f'{what}: the message does not name the file: '
                             f'{error}')
            continue
        except Exception as error:
            wrong.append(f'{what}: {type(error).__name__}: {error}')
            continue
        if expected is None or not expected(what, loaded):
            wrong.append(f'{what}: loaded without an error, and not what '
                         'was saved')
    return wrong


def _loads_as_saved(saved):

    def expected(what, loaded):
        # a legacy checkpoint carries no checksums: damage to its tensor data
        # loads (docs/checkpoints.md says so, and the loader warns)
        return _same(loaded,
                     saved) or what.startswith('legacy checkpoint overwritten')

    return expected


def test_the_checkpoint_loader_reports_every_bad_file(trained, tmp_path):
    wrong = _check_all(
        _cases(trained), tmp_path,
        lambda path: _load_checkpoint(path, map_location='cpu'),
        CheckpointError, _loads_as_saved(trained[2]))
    assert not wrong, f'{len(wrong)} bad files:\n' + '\n'.join(wrong[:20])


def test_both_formats_of_the_checkpoint_load_whole(trained):
    checkpoint, legacy, saved = trained
    for path in (checkpoint, legacy):
        assert _same(_load_checkpoint(str(path), map_location='cpu'), saved)


def test_the_tools_checkpoint_reader_reports_every_bad_file(trained, tmp_path):
    """``load_config_checkpoint`` (the export, deploy and visualisation
    tools): its errors are the loader's, or a ValueError for a file that
    loads but does not fit the model."""
    cases = [case for i, case in enumerate(_cases(trained)) if i % 3 == 0]
    model = _InvolutionModel()

    def load(path):
        load_config_checkpoint(model, path, 'the fuzz config')
        return model.state_dict()

    def expected(what, state):
        return what.startswith('legacy checkpoint overwritten') or _same(
            dict(state), dict(trained[2]['state_dict']))

    wrong = _check_all(cases, tmp_path, load, (CheckpointError, ValueError),
                       expected)
    assert not wrong, f'{len(wrong)} bad files:\n' + '\n'.join(wrong[:20])


def test_the_paddleclas_reader_reports_every_bad_file(tmp_path):
    """Random bytes and a real .pdparams layout (a pickle of numpy arrays),
    truncated and overwritten."""
    params = {
        'stem.0.conv.weight':
        np.random.default_rng(0).standard_normal((32, 3, 3, 3),
                                                 dtype=np.float32),
        'fc.bias':
        np.zeros(10, np.float32),
        'StructuredToParameterName@@': {
            'fc.bias': 'linear_0.b_0'
        },
    }
    good = pickle.dumps(params, protocol=2)
    rng = random.Random(2)
    cases = [(f'random bytes, seed {seed}', _random_bytes(random.Random(seed)))
             for seed in range(150)]
    for _ in range(100):
        offset = rng.randrange(len(good))
        cases.append(
            (f'.pdparams truncated at offset {offset}', good[:offset]))
    for seed in range(100):
        span_rng = random.Random(seed)
        damaged = bytearray(good)
        offset, length = span_rng.randrange(len(good)), span_rng.randint(1, 64)
        damaged[offset:offset + length] = span_rng.randbytes(
            len(damaged[offset:offset + length]))
        cases.append(
            (f'.pdparams overwritten at {offset}+{length} (seed {seed})',
             bytes(damaged)))

    def expected(what, loaded):
        # a pickle has no checksums: an overwritten array value loads, but
        # never as anything other than arrays under the same keys
        return what.startswith('.pdparams overwritten') and isinstance(
            loaded, dict)

    wrong = _check_all(cases, tmp_path, paddleclas2mm.load_pdparams,
                       paddleclas2mm.ConversionError, expected)
    assert not wrong, f'{len(wrong)} bad files:\n' + '\n'.join(wrong[:20])
