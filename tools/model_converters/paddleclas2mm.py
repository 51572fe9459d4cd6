"""Convert a PaddleClas RedNet ImageNet checkpoint to an mmpretrain one.

PaddleClas publishes RedNet-26/38/50/101/152 ImageNet weights
(``RedNet50_pretrained.pdparams``, ...; ``ppcls/arch/backbone/model_zoo/
rednet.py``). This tool turns one into the checkpoint of the classifier of
``configs/rednet/rednet{depth}_32xb64-warmup-coslr_in1k.py`` (mmpretrain
``ImageClassifier``: ``RedNet(depth, stem_kernel_size=3)``, global average
pooling, ``LinearClsHead``), every key and shape of it::

    {'state_dict': {'backbone.stem.0.conv.weight': ..., ...,
                    'head.fc.weight': ..., 'head.fc.bias': ...},
     'meta': {'config': 'configs/rednet/rednet50_32xb64-warmup-coslr_in1k.py',
              'source': ..., 'sha256': ..., 'arch': 'RedNet-50', ...}}

The ``.pdparams`` file (``paddle.save`` of a state dict: a pickle of a dict
name -> numpy array) is read without running any of it: only what numpy
arrays and plain containers need is let through. The depth is found from
the file's blocks per stage. Paddle's module names are the backbone's; its
BatchNorm ``_mean``/``_variance`` become ``running_mean``/``running_var``
(``num_batches_tracked`` is set to 0) and its ``fc.weight``, stored (in,
out), is transposed. Missing, left-over and wrong-shape keys are all
reported, and then nothing is written. The output is written atomically and
an existing file is replaced only with ``--overwrite``. (The checks of the
paths and keys, the meta and the write are shared with the other converters:
:mod:`mmplug_involution.apis.model_conversion`.)

Example:
    python tools/model_converters/paddleclas2mm.py \\
        RedNet50_pretrained.pdparams checkpoints/rednet50_in1k.pth
"""
import argparse
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from mmplug_involution.apis import (ConversionError, blocks_per_stage,
                                    check_output_path, compare_keys,
                                    conversion_meta, converter_parser,
                                    count_parameters, exit_with_error,
                                    save_converted)
from mmplug_involution.models import RedNet
from mmplug_involution.runtime import (UnsafeCheckpointError,
                                       pickled_array_globals)

#: blocks per stage of each RedNet depth (PaddleClas's ``layer_cfg`` is the
#: same), from the backbone the checkpoint is converted for
REDNET_STAGE_BLOCKS = {
    depth: tuple(stage_blocks)
    for depth, (_, stage_blocks) in RedNet.arch_settings.items()
}
#: the entry ``paddle.save`` adds (structured name -> Paddle parameter name)
PADDLE_NAME_TABLE = 'StructuredToParameterName@@'
STEM_KERNEL_SIZE = 3  # the stem involution of the ImageNet models
KERNEL_SIZE = 7  # the bottleneck involutions
GROUP_CHANNELS = 16
REDUCTION_RATIO = 4
EXPANSION = 4
FEATURE_CHANNELS = 512 * EXPANSION
#: Paddle BatchNorm2D state -> torch BatchNorm2d state
_BN_NAMES = (('weight', 'weight'), ('bias', 'bias'), ('_mean', 'running_mean'),
             ('_variance', 'running_var'))
_INVOLUTION_KEY = re.compile(r'(stem\.1|layer[1-4]\.\d+\.conv2)\.conv1\.conv'
                             r'\.weight')
#: keys of paddle.vision's ResNet and of PaddleClas's own ResNet family
_RESNET_KEY = re.compile(r'(conv1|layer\d\.\d+\.conv\d)\.weight'
                         r'|(conv1_1\._conv|blocks\.\d+\.conv\d\.conv)\.weight'
                         r'|res\d\w+_branch\w+')
#: the config of each depth's classifier, relative to the repository
CONFIG = 'configs/rednet/rednet{depth}_32xb64-warmup-coslr_in1k.py'
PROG = 'paddleclas2mm'


class UnsafePickleError(ConversionError):
    """The pickle asks for something other than numpy arrays and plain
    containers (it could run code)."""


def _allowed_globals() -> Dict[Tuple[str, str], object]:
    """(module, name) -> object for every import a .pdparams file needs:
    what a pickle of numpy arrays imports (shared with the checkpoint
    loader) and ``OrderedDict``."""
    allowed = {
        tuple(name.rsplit('.', 1)): function
        for name, function in pickled_array_globals().items()
    }
    allowed['collections', 'OrderedDict'] = OrderedDict
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers only."""

    allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[module, name]
        except KeyError:
            raise UnsafePickleError(
                f'refused: the file would import {module}.{name}, which a '
                '.pdparams file (numpy arrays in a dict) never needs and '
                'which could run code; nothing of it was run.') from None

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f'refused: the pickle asks for an external object ({pid!r}), '
            'which a .pdparams file never does.')


def load_pdparams(path: str) -> Dict[str, np.ndarray]:
    """Read a ``.pdparams`` file without running any of its code.

    Returns:
        dict: parameter name -> numpy array (``StructuredToParameterName@@``
        and any other non-array entry are kept as they are).

    Raises:
        ConversionError: the file is not a complete .pdparams pickle, or
            holds object arrays; UnsafePickleError: it imports anything
            numpy arrays and containers do not need (named).
    """
    if zipfile.is_zipfile(path):
        raise ConversionError(
            f'{path} is a zip archive (a torch checkpoint?), not a '
            'PaddlePaddle .pdparams file (a pickle of numpy arrays).')
    with open(path, 'rb') as f:
        try:
            params = _ArrayUnpickler(f, encoding='latin1').load()
        except UnsafePickleError as error:
            raise UnsafePickleError(f'{path}: {error}') from None
        except UnsafeCheckpointError as error:  # the shared latin-1 check
            raise UnsafePickleError(f'{path}: refused: {error}') from None
        except Exception as error:
            raise ConversionError(
                f'{path} is not a complete PaddlePaddle .pdparams file (a '
                'pickle of numpy arrays): it is truncated, damaged or '
                f'another kind of file ({type(error).__name__}: {error}). '
                'Download it again.') from error
    if not isinstance(params, dict):
        raise ConversionError(
            f'{path} holds a {type(params).__name__}, not the dict of '
            'arrays of a PaddlePaddle .pdparams file.')
    objects = sorted(
        str(key) for key, value in params.items()
        if isinstance(value, np.ndarray) and value.dtype.hasobject)
    if objects:
        raise ConversionError(
            f'{path} holds arrays of Python objects ({", ".join(objects)}); '
            'a .pdparams file holds numbers only.')
    return params


def rednet_depth(params: dict) -> int:
    """RedNet's depth (26, 38, 50, 101 or 152) from the blocks per stage.

    Raises:
        ConversionError: the keys are not a RedNet's (no involution), or
            their blocks per stage match no depth.
    """
    keys = [str(key) for key in params if key != PADDLE_NAME_TABLE]
    if not any(_INVOLUTION_KEY.fullmatch(key) for key in keys):
        resnet = [key for key in keys if _RESNET_KEY.fullmatch(key)]
        if resnet:
            looks = f'its keys are a ResNet\'s (e.g. {", ".join(resnet[:3])})'
        else:
            looks = (f'its keys are {", ".join(keys[:3]) or "none"}'
                     f'{", ..." if len(keys) > 3 else ""}')
        raise ConversionError(
            'not a RedNet checkpoint: it has no involution (no '
            "'stem.1.conv1.conv.weight', no 'layerS.B.conv2.conv1.conv."
            f"weight'); {looks}. Convert one of PaddleClas's "
            'RedNet{26,38,50,101,152}_pretrained.pdparams.')
    blocks = blocks_per_stage(params)
    for depth, stage_blocks in REDNET_STAGE_BLOCKS.items():
        if blocks == stage_blocks:
            return depth
    known = '; '.join(f'{depth}: {stage_blocks}'
                      for depth, stage_blocks in REDNET_STAGE_BLOCKS.items())
    raise ConversionError(
        f'the file has {blocks} blocks in layer1..layer4, which is no RedNet '
        f'depth ({known}).')


def _bn_shapes(name: str, channels: int) -> List[Tuple[str, tuple]]:
    return [(f'{name}.{paddle}', (channels, )) for paddle, _ in _BN_NAMES]


def _conv_bn_shapes(name: str, out: int, inp: int,
                    kernel: int) -> List[Tuple[str, tuple]]:
    return [(f'{name}.conv.weight', (out, inp, kernel, kernel)),
            *_bn_shapes(f'{name}.bn', out)]


def _involution_shapes(name: str, channels: int,
                       kernel: int) -> List[Tuple[str, tuple]]:
    reduced = channels // REDUCTION_RATIO
    span = kernel * kernel * channels // GROUP_CHANNELS
    shapes = _conv_bn_shapes(f'{name}.conv1', reduced, channels, 1)
    shapes += [(f'{name}.conv2.conv.weight', (span, reduced, 1, 1)),
               (f'{name}.conv2.conv.bias', (span, ))]
    return shapes


def _bottleneck_shapes(name: str, inplanes: int, planes: int,
                       downsample: bool) -> List[Tuple[str, tuple]]:
    out = planes * EXPANSION
    shapes = [(f'{name}.conv1.weight', (planes, inplanes, 1, 1))]
    shapes += _bn_shapes(f'{name}.bn1', planes)
    shapes += _involution_shapes(f'{name}.conv2', planes, KERNEL_SIZE)
    shapes += _bn_shapes(f'{name}.bn2', planes)
    shapes += [(f'{name}.conv3.weight', (out, planes, 1, 1))]
    shapes += _bn_shapes(f'{name}.bn3', out)
    if downsample:
        shapes += [(f'{name}.downsample.0.weight', (out, inplanes, 1, 1))]
        shapes += _bn_shapes(f'{name}.downsample.1', out)
    return shapes


def paddle_shapes(depth: int, num_classes: int = 1000) -> Dict[str, tuple]:
    """Every key of PaddleClas's RedNet-``depth`` with its (Paddle) shape,
    in the order of the converted model's state dict."""
    shapes = _conv_bn_shapes('stem.0', 32, 3, 3)
    shapes += _involution_shapes('stem.1', 32, STEM_KERNEL_SIZE)
    shapes += _bn_shapes('stem.2', 32)
    shapes += _conv_bn_shapes('stem.4', 64, 32, 3)
    inplanes = 64
    for stage, blocks in enumerate(REDNET_STAGE_BLOCKS[depth]):
        planes = 64 * 2**stage
        for block in range(blocks):
            shapes += _bottleneck_shapes(f'layer{stage + 1}.{block}', inplanes,
                                         planes, block == 0)
            inplanes = planes * EXPANSION
    # paddle.nn.Linear stores its weight as (in_features, out_features)
    shapes += [('fc.weight', (FEATURE_CHANNELS, num_classes)),
               ('fc.bias', (num_classes, ))]
    return OrderedDict(shapes)


def _num_classes(params: dict) -> int:
    """The classes of the file's fc layer (1000 when it has none)."""
    for key, axis in (('fc.bias', 0), ('fc.weight', 1)):
        value = params.get(key)
        if isinstance(value, np.ndarray) and value.ndim > axis:
            return int(value.shape[axis])
    return 1000


def _mm_key(paddle_key: str) -> str:
    """The mmpretrain classifier's key for a Paddle key."""
    if paddle_key.startswith('fc.'):
        return f'head.{paddle_key}'
    module, _, name = paddle_key.rpartition('.')
    name = dict(_BN_NAMES).get(name, name)
    return f'backbone.{module}.{name}'


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A torch tensor (own memory, native byte order) of ``array``."""
    array = array.astype(array.dtype.newbyteorder('='), copy=False)
    return torch.from_numpy(np.ascontiguousarray(array)).clone()


def convert(params: dict) -> Dict[str, torch.Tensor]:
    """The mmpretrain classifier state dict of a PaddleClas RedNet.

    Args:
        params (dict): Paddle name -> numpy array, as :func:`load_pdparams`
            returns.

    Returns:
        OrderedDict: ``backbone.*`` (with ``num_batches_tracked`` = 0 for
        every BatchNorm), ``head.fc.weight`` (num_classes, 2048) and
        ``head.fc.bias`` -> torch tensors.

    Raises:
        ConversionError: not a RedNet, or keys missing, left over or of
            the wrong shape (all of them listed).
    """
    depth = rednet_depth(params)
    expected = paddle_shapes(depth, _num_classes(params))
    found = {
        key: value
        for key, value in params.items() if key != PADDLE_NAME_TABLE
    }
    mismatches = compare_keys(expected, found, f'RedNet-{depth}', np.ndarray,
                              'an array')
    if mismatches:
        raise ConversionError(
            mismatches.report(
                f'the file does not fit PaddleClas\'s RedNet-{depth} (the '
                'depth of its blocks per stage):'))
    state_dict = OrderedDict()
    for key in expected:
        value = params[key].T if key == 'fc.weight' else params[key]
        state_dict[_mm_key(key)] = _tensor(value)
        if key.endswith('._variance'):
            bn = _mm_key(key).rpartition('.')[0]
            state_dict[f'{bn}.num_batches_tracked'] = torch.tensor(0)
    return state_dict


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return converter_parser(
        PROG, 'Convert a PaddleClas RedNet ImageNet checkpoint '
        '(.pdparams) to the mmpretrain classifier checkpoint of '
        'configs/rednet/rednet{depth}_32xb64-warmup-coslr_in1k.py.',
        'RedNet50_pretrained.pdparams').parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert ``src`` to ``dst``; errors exit with a message."""
    args = parse_args(argv)
    try:
        check_output_path(args.src, args.dst, args.overwrite)
    except ConversionError as error:
        exit_with_error(PROG, error)
    try:
        params = load_pdparams(args.src)
    except ConversionError as error:
        exit_with_error(PROG, error, args.dst)
    try:
        state_dict = convert(params)
    except ConversionError as error:
        exit_with_error(PROG, f'{args.src}: {error}', args.dst)
    depth = rednet_depth(params)
    num_classes = state_dict['head.fc.bias'].shape[0]
    meta = conversion_meta(
        args.src,
        converter='tools/model_converters/paddleclas2mm.py',
        config=CONFIG.format(depth=depth),
        arch=f'RedNet-{depth}',
        depth=depth,
        stem_kernel_size=STEM_KERNEL_SIZE,
        num_classes=num_classes)
    try:
        save_converted(args.dst, state_dict, meta)
    except ConversionError as error:
        exit_with_error(PROG, error)
    print(f'{args.src} -> {args.dst}: RedNet-{depth} (stem_kernel_size='
          f'{STEM_KERNEL_SIZE}, {num_classes} classes), {len(state_dict)} '
          f'tensors, {count_parameters(state_dict):,} parameters.')
    if num_classes != 1000:
        print(f'note: the configs have 1000 classes; set '
              f'model.head.num_classes={num_classes}.')


if __name__ == '__main__':
    main()
