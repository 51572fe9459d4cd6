"""What the checkpoint converters (``tools/model_converters/``) share.

A converter reads another code base's file, checks every key and shape of it
against the model it converts for, and writes that model's checkpoint
``{'state_dict': ..., 'meta': ...}``. Shared here: the checks of the paths
(:func:`check_output_path`), the report of all missing, left-over and
wrong-shape keys (:func:`compare_keys`, :class:`KeyMismatches`), the
``meta`` (:func:`conversion_meta`: source file, its sha256, converter,
config, date), the atomic write (:func:`save_converted`) and the error a
converter raises for an input it cannot convert (:class:`ConversionError`)
and exits with (:func:`exit_with_error`).
"""
import argparse
import dataclasses
import datetime
import hashlib
import io
import os.path as osp
import re
import sys
from typing import (Any, Callable, Dict, List, Mapping, NoReturn, Optional,
                    Tuple)

import torch

from mmplug_involution.runtime import atomic_write

__all__ = [
    'converter_parser', 'ConversionError', 'KeyMismatches', 'blocks_per_stage',
    'check_output_path', 'compare_keys', 'conversion_meta', 'count_parameters',
    'exit_with_error', 'file_sha256', 'save_converted'
]

#: state-dict entries that are statistics, not parameters
_BUFFER_SUFFIXES = ('running_mean', 'running_var', 'num_batches_tracked')
#: a ResNet-style block key, ``layerS.B.`` (under ``backbone.`` or not)
_BLOCK_KEY = re.compile(r'(?:backbone\.)?layer([1-4])\.(\d+)\.')


class ConversionError(Exception):
    """The input cannot be converted; the message says why."""


def converter_parser(prog: str, description: str,
                     src_example: str) -> argparse.ArgumentParser:
    """The command line every converter takes: ``SRC DST [--overwrite]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument('src', help=f'the file to convert, e.g. {src_example}')
    parser.add_argument('dst', help='the checkpoint to write (.pth)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace DST if it exists (default: refuse)')
    return parser


def blocks_per_stage(keys) -> Tuple[int, int, int, int]:
    """A four-stage ResNet-style network's blocks per stage, from the
    highest ``layerS.B.`` index of each stage among ``keys`` (of any type;
    0 for a stage without keys)."""
    counts = [0, 0, 0, 0]
    for key in keys:
        match = _BLOCK_KEY.match(str(key))
        if match:
            stage, block = int(match.group(1)) - 1, int(match.group(2))
            counts[stage] = max(counts[stage], block + 1)
    return tuple(counts)


def file_sha256(path: str) -> str:
    """The sha256 (hex digest) of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_path(src: str, dst: str, overwrite: bool) -> None:
    """Refuse, before anything is read, what a conversion must not do.

    Raises:
        ConversionError: ``src`` is not a file, ``dst`` is a folder or
            ``src`` itself, or ``dst`` exists and ``overwrite`` is false.
    """
    if osp.isdir(src):
        raise ConversionError(f'{src} is a folder; give the file to convert.')
    if not osp.isfile(src):
        raise ConversionError(f'{src} not found.')
    if osp.isdir(dst):
        raise ConversionError(f'{dst} is a folder; give the file to write.')
    if osp.exists(dst):
        if osp.samefile(src, dst):
            raise ConversionError('the output would replace the input; give '
                                  'another output file.')
        if not overwrite:
            raise ConversionError(
                f'{dst} exists; pass --overwrite to replace it.')


@dataclasses.dataclass
class KeyMismatches:
    """How a file's entries differ from a model's: keys ``missing`` (in the
    model's order), ``left_over`` (sorted) and ``wrong`` (one line per
    entry of the wrong shape or kind)."""

    missing: List[str] = dataclasses.field(default_factory=list)
    left_over: List[str] = dataclasses.field(default_factory=list)
    wrong: List[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.missing) + len(self.left_over) + len(self.wrong)

    def report(self, header: str) -> str:
        """``header``, then every missing, left-over and wrong entry under
        a title with its count (the titles of empty lists left out)."""
        lines = [header]
        for title, keys in (('missing', self.missing),
                            ('left over', self.left_over), ('wrong shape',
                                                            self.wrong)):
            if keys:
                lines.append(f'  {title} ({len(keys)}):')
                lines += [f'    {key}' for key in keys]
        return '\n'.join(lines)


def compare_keys(
    expected: Mapping[str, Tuple[int, ...]],
    found: Mapping[Any, Any],
    model: str,
    value_type: type = torch.Tensor,
    value_name: str = 'a tensor',
    check: Optional[Callable[[str, Any],
                             Optional[str]]] = None) -> KeyMismatches:
    """Every difference between ``found`` and ``expected``.

    Args:
        expected (Mapping): key -> shape (a tuple) the model needs.
        found (Mapping): key -> value, from the file (keys of any type; a
            key that is no string is left over).
        model (str): what needs the shapes, for the messages
            (``'RedNet-50'``).
        value_type (type): what each value must be (``torch.Tensor``,
            ``np.ndarray``); it needs a ``shape``.
        value_name (str): ``value_type`` in words (``'an array'``).
        check (callable, optional): ``check(key, value)`` -> a problem
            (``'needs ..., the file has ...'``) or None, for a value of the
            right type and shape (e.g. its dtype).

    Returns:
        KeyMismatches: false (empty) when every key is there with its shape.
    """
    mismatches = KeyMismatches()
    mismatches.missing = [key for key in expected if key not in found]
    mismatches.left_over = sorted(
        str(key) for key in found if key not in expected)
    for key, shape in expected.items():
        if key not in found:
            continue
        value = found[key]
        if not isinstance(value, value_type):
            mismatches.wrong.append(
                f'{key}: {model} needs {value_name} of shape {shape}, the '
                f'file has a {type(value).__name__}')
        elif tuple(value.shape) != tuple(shape):
            mismatches.wrong.append(f'{key}: {model} needs {tuple(shape)}, '
                                    f'the file has {tuple(value.shape)}')
        elif check is not None:
            problem = check(key, value)
            if problem:
                mismatches.wrong.append(f'{key}: {model} {problem}')
    return mismatches


def count_parameters(state_dict: Mapping[str, Any]) -> int:
    """The numbers in ``state_dict`` that are parameters (BatchNorm's
    running statistics and batch counts left out)."""
    return sum(value.numel() for key, value in state_dict.items()
               if not key.endswith(_BUFFER_SUFFIXES))


def conversion_meta(src: str, converter: str, config: str,
                    **fields: Any) -> Dict[str, Any]:
    """A converted checkpoint's ``meta``: ``config`` (the config the state
    dict is for, relative to the repository), ``source`` (the input's file
    name), ``sha256`` (of the input), ``converter``, then ``fields`` and the
    ``date`` (ISO)."""
    return dict(
        config=config,
        source=osp.basename(src),
        sha256=file_sha256(src),
        converter=converter,
        **fields,
        date=datetime.date.today().isoformat())


def save_converted(dst: str, state_dict: Mapping[str, torch.Tensor],
                   meta: Mapping[str, Any]) -> None:
    """``torch.save({'state_dict': ..., 'meta': ...})`` into ``dst``
    atomically: ``dst`` is the complete new file or what it was before.

    Raises:
        ConversionError: ``dst`` cannot be written (its folder, the disk).
    """
    buffer = io.BytesIO()
    torch.save(dict(state_dict=dict(state_dict), meta=dict(meta)), buffer)
    try:
        atomic_write(dst, buffer.getvalue())
    except OSError as error:
        raise ConversionError(
            f'{dst} cannot be written: {error.strerror or error}') from error


def exit_with_error(prog: str,
                    message: Any,
                    dst: Optional[str] = None) -> NoReturn:
    """Exit (status 1) with ``prog: error: message``, and a line saying
    ``dst`` was not written when given."""
    written = f'\n{dst} was not written.' if dst is not None else ''
    sys.exit(f'{prog}: error: {message}{written}')
