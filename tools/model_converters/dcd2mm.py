"""Convert a DCD authors' ImageNet checkpoint to an mmpretrain one.

The authors of dynamic convolution decomposition (github liyunsheng13/dcd)
train with their ``main.py``, which saves ``{'epoch', 'arch', 'state_dict',
'best_prec1', 'optimizer'}`` (``resnet50_dcd.pth.tar``,
``mv2x1.0_dcd.pth.tar``, ...; the state dict's keys under ``module.`` when
the model ran in ``DataParallel``; torch 1.0's legacy file format). This
tool turns one into the checkpoint of the classifier (mmpretrain
``ImageClassifier``) of the matching config in ``configs/dynamic_conv/``,
every key and shape of it:

* ``resnet18_dcd``: ``resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py``;
* ``resnet50_dcd``: ``resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py``;
* ``mobilenetv2_dcd`` at width 1.0 with ``fc_squeeze`` 16:
  ``mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py``;
* ``mobilenetv2_dcd`` at width 0.5 with ``fc_squeeze`` 8:
  ``mobilenet-v2-050-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py``.

(Their code's default, x1.0 with fc_squeeze 8, has no config and is refused
as such.) The checkpoint written::

    {'state_dict': {'backbone.conv1.weight': ..., ...,
                    'head.static.weight': ..., 'head.phi.weight': ...},
     'meta': {'config': 'configs/dynamic_conv/...', 'source': ...,
              'sha256': ..., 'arch': 'resnet50_dcd', 'epoch': ...,
              'best_prec1': ..., ...}}

The file is read by the package's safe loader (``weights_only=True``: a
pickle that would run code is refused, a damaged file reported). The model
is the file's ``arch`` where it has one (else its keys decide), and the
MobileNetV2's width and squeeze from its shapes: every candidate config's
model is built, its keys named as the authors name them, and the one whose
every key and shape the file has is taken. The names inside a dynamic conv
(``conv``, ``q``/``conv_q``, ``p``/``conv_p``, ``bn1``, ``bn2``, ``fc.0``,
``fc.1.fc.0``, ``fc_phi``, ``fc_scale``) become ``DCDConv2d``'s
(``static``, ``q``, ``p``, ``q_norm``, ``fusion_norm``, ``squeeze``,
``squeeze_gate``, ``phi``, ``scale``), and the classifier
(``classifier.0.`` or, after dropout, ``classifier.1.``) becomes
``DCDClsHead`` (``head.``); see :func:`authors_key`. Missing, left-over and
wrong-shape keys are all reported, and then nothing is written. The output
is written atomically and an existing file is replaced only with
``--overwrite``.

Example:
    python tools/model_converters/dcd2mm.py \\
        resnet50_dcd.pth.tar checkpoints/resnet50-dcd_in1k.pth
"""
import argparse
import dataclasses
import functools
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.config import Config

from mmplug_involution.apis import (ConversionError, KeyMismatches,
                                    blocks_per_stage, build_config_model,
                                    check_output_path, compare_keys,
                                    conversion_meta, converter_parser,
                                    count_parameters, exit_with_error,
                                    save_converted)
from mmplug_involution.runtime import CheckpointError, load_checkpoint_file

ROOT = Path(__file__).resolve().parents[2]
PROG = 'dcd2mm'
_CONFIGS = 'configs/dynamic_conv/'

#: the authors' names of a dynamic conv's parts (``conv_basic_dy``,
#: ``conv_dy``, ``DYModule``) -> ``DCDConv2d``'s; Q and P in
#: :data:`Q_P_NAMES`
DYNAMIC_CONV_NAMES = {
    'conv': 'static',
    'bn1': 'q_norm',
    'bn2': 'fusion_norm',
    'fc.0': 'squeeze',
    'fc.1.fc.0': 'squeeze_gate',
    'fc_phi': 'phi',
    'fc_scale': 'scale',
}
#: the names of Q and P: ``q``/``p`` in the ResNets, ``conv_q``/``conv_p``
#: in MobileNetV2
Q_P_NAMES = {
    'resnet': {
        'q': 'q',
        'p': 'p'
    },
    'mobilenet_v2': {
        'conv_q': 'q',
        'conv_p': 'p'
    },
}
#: the authors' dynamic classifier's parts -> ``DCDClsHead``'s
CLASSIFIER_NAMES = {
    'cls': 'static',
    'cls_q': 'q',
    'cls_p': 'p',
    'bn1': 'q_norm',
    'bn2': 'fusion_norm',
    'fc.0': 'squeeze',
    'fc.1.fc.0': 'squeeze_gate',
    'fc_phi': 'phi',
    'fc_scale': 'scale',
}


@dataclasses.dataclass(frozen=True)
class Target:
    """One of the authors' models and the config whose model it becomes.

    ``config`` is None for a model recognised but without a config (built
    from ``base`` with ``squeeze_ratio``, to say so).
    """

    arch: str  # the authors' name (their main.py's --arch)
    family: str  # 'resnet' or 'mobilenet_v2'
    config: Optional[str]
    base: str
    width_mult: Optional[float] = None
    fc_squeeze: Optional[int] = None
    squeeze_ratio: Optional[int] = None  # set on the base config's backbone

    @property
    def label(self) -> str:
        """The model in words: ``mobilenetv2_dcd (width 0.5, fc_squeeze
        8)``."""
        if self.width_mult is None:
            return self.arch
        return (f'{self.arch} (width {self.width_mult}, fc_squeeze '
                f'{self.fc_squeeze})')

    @property
    def meta(self) -> Dict[str, Any]:
        """What the output's meta says of the model besides its arch."""
        if self.width_mult is None:
            return {}
        return dict(width_mult=self.width_mult, fc_squeeze=self.fc_squeeze)


_MOBILENET = _CONFIGS + 'mobilenet-v2-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py'
_MOBILENET_050 = (
    _CONFIGS + 'mobilenet-v2-050-dcd_8xb64-lbs-mixup-coslr-300e_in1k.py')
_RESNET18 = _CONFIGS + 'resnet18-dcd_8xb32-lbs-mixup-120e_in1k.py'
_RESNET50 = _CONFIGS + 'resnet50-dcd_8xb32-lbs-mixup-120e_in1k.py'
#: the models converted, then those only recognised (their code's default
#: fc_squeeze 8 at width 1.0, and fc_squeeze 16 at width 0.5)
TARGETS = (
    Target('resnet18_dcd', 'resnet', _RESNET18, _RESNET18),
    Target('resnet50_dcd', 'resnet', _RESNET50, _RESNET50),
    Target('mobilenetv2_dcd', 'mobilenet_v2', _MOBILENET, _MOBILENET, 1.0, 16),
    Target('mobilenetv2_dcd', 'mobilenet_v2', _MOBILENET_050, _MOBILENET_050,
           0.5, 8),
    Target('mobilenetv2_dcd', 'mobilenet_v2', None, _MOBILENET, 1.0, 8, 8),
    Target('mobilenetv2_dcd', 'mobilenet_v2', None, _MOBILENET_050, 0.5, 16,
           16),
)
CONVERTED = tuple(target for target in TARGETS if target.config)

_RESNET_CONV = re.compile(r'(layer\d+\.\d+\.conv\d+)\.(.+)')
_MOBILENET_LAYER = re.compile(r'layer(\d+)\.(\d+)\.')
_MOBILENET_BLOCK = re.compile(r'layer(\d+)\.(\d+)\.conv\.(\d+)\.(conv|bn)\.'
                              r'(.+)')
_MOBILENET_ENDS = {
    'conv1.conv.': 'features.0.0.',
    'conv1.bn.': 'features.0.1.',
    'conv2.conv.': 'conv.0.',
    'conv2.bn.': 'conv.1.',
}
_PLAIN = ('weight', 'bias')  # what a plain conv or linear layer holds
#: the entries of the authors' checkpoints besides the state dict
_CHECKPOINT_ENTRIES = ('arch', 'epoch', 'best_prec1', 'optimizer')


@functools.lru_cache(maxsize=None)
def model_shapes(target: Target) -> 'OrderedDict[str, Tuple[int, ...]]':
    """Key -> shape of the state dict of ``target``'s classifier, in the
    model's order (the model is built once per process)."""
    cfg = Config.fromfile(str(ROOT / target.base))
    cfg.model.pop('train_cfg', None)  # (batch augments: no weights)
    if target.squeeze_ratio is not None:
        cfg.model.backbone.dcd_cfg.squeeze_ratio = target.squeeze_ratio
    model = build_config_model(cfg)
    return OrderedDict(
        (key, tuple(value.shape)) for key, value in model.state_dict().items())


def _authors_part(names: Mapping[str, str], part: str) -> str:
    """``part`` of a DCD layer (``q_norm.running_var``) as the authors name
    it (``bn1.running_var``), by the table ``names`` (theirs -> ours)."""
    for theirs, ours in names.items():
        if part.startswith(ours + '.'):
            return theirs + part[len(ours):]
    raise LookupError(f'{part}: no name of the authors for it')


def _dynamic_part(family: str, part: str) -> str:
    return _authors_part({**DYNAMIC_CONV_NAMES, **Q_P_NAMES[family]}, part)


def _mobilenet_features(keys) -> Dict[Tuple[int, int], int]:
    """(layer, block) -> the index of the block in the authors'
    ``features`` (1 on: ``features.0`` is the stem), from our keys."""
    blocks: Dict[Tuple[int, int], int] = {}
    for key in keys:
        match = _MOBILENET_LAYER.match(key[len('backbone.'):])
        if key.startswith('backbone.') and match:
            layer_block = int(match.group(1)), int(match.group(2))
            blocks.setdefault(layer_block, len(blocks) + 1)
    return blocks


def authors_key(key: str, family: str, classifier: int,
                features: Dict[Tuple[int, int], int]) -> str:
    """The authors' key of one of our keys.

    Args:
        key (str): a key of our classifier (``backbone.*``, ``head.*``).
        family (str): ``'resnet'`` or ``'mobilenet_v2'``.
        classifier (int): the index of their ``DYCls`` in ``classifier``
            (0; 1 after a Dropout).
        features (dict): MobileNetV2's (layer, block) -> ``features``
            index (:func:`_mobilenet_features`).

    The ResNets keep the names (``conv1``, ``bn1``, ``layerS.B.bnI``,
    ``layerS.B.downsample.{0,1}``) but inside the dynamic convs
    ``layerS.B.convI``; MobileNetV2's ``conv1`` is ``features.0``,
    ``layerL.B`` is ``features.i`` (in order), in which ConvModule ``m``
    is ``conv.{3m}`` and its BN ``conv.{3m+1}``, and ``conv2`` is ``conv``.
    """
    if key.startswith('head.'):
        part = _authors_part(CLASSIFIER_NAMES, key[len('head.'):])
        return f'classifier.{classifier}.{part}'
    if not key.startswith('backbone.'):
        raise LookupError(f'{key}: no name of the authors for it')
    rest = key[len('backbone.'):]
    if family == 'resnet':
        match = _RESNET_CONV.fullmatch(rest)
        if match and match.group(2) not in _PLAIN:
            return f'{match.group(1)}.{_dynamic_part(family, match.group(2))}'
        return rest
    for ours, theirs in _MOBILENET_ENDS.items():
        if rest.startswith(ours):
            return theirs + rest[len(ours):]
    match = _MOBILENET_BLOCK.fullmatch(rest)
    if match is None:
        raise LookupError(f'{key}: no name of the authors for it')
    layer, block, module, kind, part = match.groups()
    index = 3 * int(module) + (kind == 'bn')
    if kind == 'conv' and part not in _PLAIN:
        part = _dynamic_part(family, part)
    return (f'features.{features[int(layer), int(block)]}.conv.{index}.'
            f'{part}')


def expected_keys(target: Target,
                  classifier: int) -> 'OrderedDict[str, Tuple[str, tuple]]':
    """The authors' key -> (our key, shape) of every entry of ``target``,
    in our model's order (the names mapped from the tables as they are)."""
    shapes = model_shapes(target)
    features = _mobilenet_features(shapes)
    return OrderedDict(
        (authors_key(key, target.family, classifier, features), (key, shape))
        for key, shape in shapes.items())


def _dtype_problem(key: str, value: torch.Tensor) -> Optional[str]:
    """A BatchNorm's batch count must be an integer, the rest floats."""
    if key.endswith('num_batches_tracked'):
        if value.dtype.is_floating_point or value.dtype.is_complex \
                or value.dtype == torch.bool:
            return f'needs an integer tensor, the file has {value.dtype}'
    elif not value.dtype.is_floating_point:
        return f'needs a floating-point tensor, the file has {value.dtype}'
    return None


def _state_dict(loaded: Any) -> Tuple[dict, Optional[str]]:
    """(the state dict, without ``module.``; the ``arch`` entry) of what
    the file holds: the authors' checkpoint dict or a bare state dict."""
    if not isinstance(loaded, dict):
        raise ConversionError(
            f'the file holds a {type(loaded).__name__}, not a checkpoint (a '
            'dict with a state_dict) nor a state dict.')
    arch = loaded.get('arch')
    if arch is not None and not isinstance(arch, str):
        raise ConversionError(
            f'its arch entry is {arch!r} (type {type(arch).__name__}), not '
            'the name of a model.')
    if 'state_dict' in loaded:
        state_dict = loaded['state_dict']
    elif any(key in loaded for key in _CHECKPOINT_ENTRIES):
        raise ConversionError(
            'it is a checkpoint without a state_dict entry (it has '
            f'{", ".join(sorted(map(str, loaded)))}).')
    else:  # a bare state dict
        state_dict = loaded
    if not isinstance(state_dict, dict):
        raise ConversionError(
            f'its state_dict entry is a {type(state_dict).__name__}, not a '
            'dict of tensors.')
    if state_dict and all(
            isinstance(key, str) and key.startswith('module.')
            for key in state_dict):  # saved from DataParallel
        state_dict = {
            key[len('module.'):]: value
            for key, value in state_dict.items()
        }
    return state_dict, arch


def _classifier_index(state_dict: dict) -> int:
    """1 where the file's classifier follows a Dropout, else 0."""
    return int(
        any(
            isinstance(key, str) and key.startswith('classifier.1.')
            for key in state_dict))


def _family(state_dict: dict) -> Optional[str]:
    """``'mobilenet_v2'`` or ``'resnet'`` by the file's keys, else None."""
    keys = [key for key in state_dict if isinstance(key, str)]
    if any(key.startswith('features.') for key in keys):
        return 'mobilenet_v2'
    if any(key.startswith('layer') for key in keys):
        return 'resnet'
    return None


def _fit(target: Target, state_dict: dict,
         classifier: int) -> Tuple[KeyMismatches, 'OrderedDict']:
    expected = expected_keys(target, classifier)
    shapes = OrderedDict((key, shape) for key, (_, shape) in expected.items())
    mismatches = compare_keys(
        shapes, state_dict, target.label, check=_dtype_problem)
    return mismatches, expected


def _converted_list() -> str:
    return '; '.join(f'{target.label}: {target.config}'
                     for target in CONVERTED)


def convert(loaded: Any) -> Tuple[Target, 'OrderedDict[str, torch.Tensor]']:
    """Our classifier's state dict of the authors' checkpoint ``loaded``.

    Args:
        loaded: what the file holds: ``{'arch', 'state_dict', ...}`` as the
            authors' main.py saves it, or a bare state dict (keys with or
            without ``module.``).

    Returns:
        tuple: the :class:`Target` (model and config) and the state dict
        (our key -> the file's tensor, in the model's order).

    Raises:
        ConversionError: no DCD checkpoint, an arch without a config, a
            model recognised without a config, or (all listed) keys
            missing, left over or of the wrong shape or dtype.
    """
    state_dict, arch = _state_dict(loaded)
    classifier = _classifier_index(state_dict)
    if arch is not None:
        candidates = [t for t in TARGETS if t.arch == arch.lower()]
        if not candidates:
            archs = dict.fromkeys(target.arch for target in CONVERTED)
            raise ConversionError(
                f'its arch is {arch!r}, which no config of this project '
                f'converts into; converted are {", ".join(archs)} '
                f'({_converted_list()}).')
    else:
        if not any(
                isinstance(key, str) and key.endswith('fc_phi.weight')
                for key in state_dict):
            keys = [str(key) for key in state_dict]
            looks = (' (they look converted already: load it with its '
                     'config)' if any(
                         key.startswith(('backbone.', 'head.'))
                         for key in keys) else '')
            raise ConversionError(
                'not a checkpoint of the DCD authors\' models: it has no '
                'dynamic convolution (no \'...fc_phi.weight\'); its keys are '
                f'{", ".join(keys[:3]) or "none"}'
                f'{", ..." if len(keys) > 3 else ""}{looks}.')
        family = _family(state_dict)
        candidates = [
            target for target in TARGETS
            if family is None or target.family == family
        ]
    results = []
    for target in candidates:
        mismatches, expected = _fit(target, state_dict, classifier)
        if not mismatches:
            break
        results.append((len(mismatches), target, mismatches))
    else:
        raise ConversionError(
            _misfit_report(state_dict, arch, classifier,
                           min(results, key=lambda result: result[0])))
    if target.config is None:
        raise ConversionError(
            f'it is the authors\' {target.label}, which no config of this '
            f'project has ({count_parameters(state_dict):,} parameters); '
            f'converted are {_converted_list()}. (Its model is that of '
            f'{target.base} with model.backbone.dcd_cfg.squeeze_ratio='
            f'{target.squeeze_ratio}.)')
    return target, OrderedDict(
        (ours, state_dict[theirs]) for theirs, (ours, _) in expected.items())


def _misfit_report(state_dict: dict, arch: Optional[str], classifier: int,
                   closest: Tuple[int, Target, KeyMismatches]) -> str:
    """All the differences from the closest candidate, and what else the
    file could be."""
    count, target, mismatches = closest
    where = target.config or f'no config; {target.base} at fc_squeeze ' \
        f'{target.fc_squeeze}'
    if arch is not None:
        header = (f'its state dict does not fit its arch, the authors\' '
                  f'{target.label} ({where}): {_differences(count)}:')
    else:
        header = (f'its state dict fits none of the authors\' models this '
                  f'tool knows; the closest is {target.label} ({where}), '
                  f'{_differences(count)}:')
    notes = []
    if target.family == 'resnet':
        found = blocks_per_stage(state_dict)
        needed = blocks_per_stage(model_shapes(target))
        if any(found) and found != needed:
            notes.append(f'(the file has {found} blocks per stage, '
                         f'{target.arch} {needed}.)')
    if arch is not None and _family(state_dict) not in (None, target.family):
        for other in CONVERTED:
            if other.arch != target.arch and not _fit(other, state_dict,
                                                      classifier)[0]:
                notes.append(f'(its keys and shapes are {other.label}\'s '
                             f'({other.config}): the arch entry and the '
                             'weights disagree.)')
                break
    return '\n'.join([mismatches.report(header)] + notes)


def _differences(count: int) -> str:
    return f'{count} difference{"s" if count != 1 else ""}'


def checkpoint_fields(loaded: Any) -> Dict[str, Any]:
    """The file's ``epoch`` (an int) and ``best_prec1`` (a float; theirs is
    a one-element tensor), where it has them as such."""
    fields: Dict[str, Any] = {}
    if not isinstance(loaded, dict):
        return fields
    epoch = loaded.get('epoch')
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        fields['epoch'] = epoch
    best = loaded.get('best_prec1')
    if isinstance(best, torch.Tensor) and best.numel() == 1 \
            and not best.dtype.is_complex:
        fields['best_prec1'] = float(best.item())
    elif isinstance(best, (int, float)) and not isinstance(best, bool):
        fields['best_prec1'] = float(best)
    return fields


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return converter_parser(
        PROG, 'Convert a checkpoint of the DCD authors\' ImageNet '
        'models (github liyunsheng13/dcd: resnet18_dcd, resnet50_dcd, '
        'mobilenetv2_dcd) to the mmpretrain classifier checkpoint of the '
        'matching configs/dynamic_conv/ config.',
        'resnet50_dcd.pth.tar').parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert ``src`` to ``dst``; errors exit with a message."""
    args = parse_args(argv)
    try:
        check_output_path(args.src, args.dst, args.overwrite)
    except ConversionError as error:
        exit_with_error(PROG, error)
    try:
        loaded = load_checkpoint_file(args.src, map_location='cpu')
    except (CheckpointError, OSError) as error:
        exit_with_error(PROG, error, args.dst)
    try:
        target, state_dict = convert(loaded)
    except ConversionError as error:
        exit_with_error(PROG, f'{args.src}: {error}', args.dst)
    meta = conversion_meta(
        args.src,
        converter='tools/model_converters/dcd2mm.py',
        config=target.config,
        arch=target.arch,
        **target.meta,
        **checkpoint_fields(loaded))
    try:
        save_converted(args.dst, state_dict, meta)
    except ConversionError as error:
        exit_with_error(PROG, error)
    print(f'{args.src} -> {args.dst}: the DCD authors\' {target.label} as '
          f'{target.config}, {len(state_dict)} tensors, '
          f'{count_parameters(state_dict):,} parameters.')
    print(f'check it: python tools/analysis/check_checkpoint.py '
          f'{target.config} {args.dst} --part model\n'
          f'validate it (ImageNet val): python tools/test.py '
          f'{target.config} {args.dst}')


if __name__ == '__main__':
    main()
