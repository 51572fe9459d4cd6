"""``import mmplug_involution`` changes nothing outside the package but its
registrations; ``import mmplug_involution.runtime`` changes what the README
lists, and nothing more."""
import json
import subprocess
import sys

SNAPSHOT = r'''
import json, sys
import torch, torch.serialization
from mmengine.analysis import complexity_analysis
from mmengine.fileio.backends import registry_utils
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.runner import checkpoint, runner


def snapshot():
    return dict(
        safe_globals=sorted(map(str, torch.serialization.get_safe_globals())),
        loaders={k: v.__module__ + '.' + v.__name__
                 for k, v in checkpoint.CheckpointLoader._schemes.items()},
        backends={k: v.__module__ + '.' + v.__name__
                  for k, v in registry_utils.backends.items()},
        prefix_backends={k: v.__name__ for k, v in
                         registry_utils.prefix_to_backends.items()},
        flop_ops=sorted(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS),
        act_ops=sorted(complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS),
        meta_path=[type(f).__module__ + '.' + type(f).__name__
                   for f in sys.meta_path],
        find_latest=runner.find_latest_checkpoint.__module__,
        config_packages=dict(MODULE2PACKAGE),
        modules=sorted(m for m in sys.modules
                       if m.split('.')[0] in ('onnxscript', 'onnx')))


# what the package imports, with its own import-time effects
import mmcv.cnn, mmdet.models, mmengine.analysis, mmengine.runner  # noqa
import mmseg.models, onnxscript.function_libs.torch_lib.registration  # noqa
before = snapshot()
import mmplug_involution  # noqa: E402
after_package = snapshot()
import mmplug_involution.runtime  # noqa: E402
after_runtime = snapshot()
print(json.dumps([before, after_package, after_runtime]))
'''


def _snapshots():
    out = subprocess.run([sys.executable, '-c', SNAPSHOT],
                         check=True,
                         capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_imports_change_only_what_the_readme_lists():
    before, package, runtime = _snapshots()
    # the package adds its configs to mmengine's table, and nothing else
    assert package.pop('config_packages') == dict(
        before.pop('config_packages'), mmplug_involution='mmplug-involution')
    runtime.pop('config_packages')
    assert package == before
    changed = {key for key in before if runtime[key] != before[key]}
    assert changed == {
        'safe_globals', 'loaders', 'backends', 'flop_ops', 'act_ops'
    }
    assert runtime['loaders'][''].endswith('checkpoint.load_from_local_safe')
    assert runtime['backends']['local'] == before['backends']['local']
    assert set(runtime['backends']) - set(before['backends']) == {
        'atomic_local'
    }
    assert set(runtime['flop_ops']) - set(before['flop_ops']) == {
        'mmplug_involution::involution2d',
        'mmplug_involution::generated_involution2d',
        'aten::scaled_dot_product_attention'
    }
    assert 'getattr' in ' '.join(runtime['safe_globals'])
