"""One registration: every class of the package is found by plain name from
mmdet, mmseg and mmpretrain configs, and none is shadowed by a toolkit's own
entry of the same name."""
import subprocess
import sys

import pytest
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import HOOKS, MODELS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import HOOKS as MMSEG_HOOKS
from mmseg.registry import MODELS as MMSEG_MODELS

import mmplug_involution.runtime  # noqa: F401 (SafeCheckpointHook)


def _ours(registry) -> dict:
    return {
        name: cls
        for name, cls in registry.module_dict.items()
        if cls.__module__.startswith('mmplug_involution.')
    }


def test_the_package_registers_its_models_and_hooks():
    assert set(_ours(MODELS)) == {
        'RedNet', 'XVolutionResNet', 'Involution', 'XVolution', 'DCDConv2d',
        'CondConv2d', 'DynamicConv2d', 'InvolutionFPN', 'InvolutionRPNHead',
        'InvolutionFCNMaskHead', 'DCDResNet', 'DCDMobileNetV2', 'DCDClsHead'
    }
    assert set(_ours(HOOKS)) == {
        'DynamicConvTemperatureHook', 'SafeCheckpointHook', 'FuseConvBNHook',
        'MixupAlphaRampHook'
    }


@pytest.mark.parametrize('registry,children', [
    (MODELS, (MMDET_MODELS, MMSEG_MODELS, MMPRETRAIN_MODELS)),
    (HOOKS, (MMDET_HOOKS, MMSEG_HOOKS, MMPRETRAIN_HOOKS)),
])
def test_every_toolkit_finds_each_class_by_plain_name(registry, children):
    for child in children:
        for name, cls in _ours(registry).items():
            assert child.get(name) is cls, (child.scope, name)


WITHOUT_MMDET = '''
import sys
sys.modules['mmdet'] = None  # as if mmdet were not installed
import mmplug_involution
from mmengine.registry import MODELS
from mmplug_involution.models import InvolutionFPN
for build in (lambda: MODELS.build(dict(type='InvolutionFPN')),
              lambda: InvolutionFPN(in_channels=[8], out_channels=8,
                                    num_outs=1)):
    try:
        build()
    except ImportError as error:
        print(error)
rednet = MODELS.build(dict(type='RedNet', depth=26, base_channels=16))
print(type(rednet).__name__, 'built without mmdet')
'''


def _printed_lines(script: str, count: int) -> list:
    """The ``count`` lines ``script`` prints in a fresh interpreter (which
    must succeed)."""
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == count, result.stdout
    return lines


def test_a_part_whose_toolkit_is_missing_says_which_extra_to_install():
    lines = _printed_lines(WITHOUT_MMDET, 3)
    for line in lines[:2]:
        assert 'InvolutionFPN builds on mmdet, which is not installed' in line
        assert 'pip install "mmplug-involution[det]"' in line
    assert lines[2] == 'RedNet built without mmdet'


WITHOUT_MMPRETRAIN = r'''
import sys
sys.modules['mmpretrain'] = None  # as if mmpretrain were not installed
import mmplug_involution
from mmengine.registry import MODELS
for name in ('DCDResNet', 'DCDMobileNetV2', 'DCDClsHead'):
    try:
        MODELS.build(dict(type=name))
    except ImportError as error:
        print(error)
layer = MODELS.build(dict(type='DCDConv2d', in_channels=8, out_channels=8,
                          kernel_size=3, padding=1))
print(type(layer).__name__, 'built without mmpretrain')
'''


def test_the_mmpretrain_parts_say_which_extra_to_install():
    lines = _printed_lines(WITHOUT_MMPRETRAIN, 4)
    for name, line in zip(('DCDResNet', 'DCDMobileNetV2', 'DCDClsHead'),
                          lines):
        assert f'{name} builds on mmpretrain, which is not installed' in line
        assert 'pip install "mmplug-involution[cls]"' in line
    assert lines[3] == 'DCDConv2d built without mmpretrain'
