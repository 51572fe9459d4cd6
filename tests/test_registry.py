"""One registration: every class of the package is found by plain name from
mmdet, mmseg and mmpretrain configs, and none is shadowed by a toolkit's own
entry of the same name."""
import pytest
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import HOOKS, MODELS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import HOOKS as MMSEG_HOOKS
from mmseg.registry import MODELS as MMSEG_MODELS

import mmplug_involution  # noqa: F401


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
        'InvolutionFCNMaskHead'
    }
    assert set(_ours(HOOKS)) == {
        'DynamicConvTemperatureHook', 'SafeCheckpointHook', 'FuseConvBNHook'
    }


@pytest.mark.parametrize('registry,children', [
    (MODELS, (MMDET_MODELS, MMSEG_MODELS, MMPRETRAIN_MODELS)),
    (HOOKS, (MMDET_HOOKS, MMSEG_HOOKS, MMPRETRAIN_HOOKS)),
])
def test_every_toolkit_finds_each_class_by_plain_name(registry, children):
    for child in children:
        for name, cls in _ours(registry).items():
            assert child.get(name) is cls, (child.scope, name)
