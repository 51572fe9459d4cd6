"""The package as a user installs it into an OpenMMLab environment of their
own: a wheel built by ``python -m build`` (from the sdist, as a release is
built), installed outside the repository into a fresh virtual environment
that holds torch, mmcv (the set-up's cached wheel) and mmdet, and nothing
else of ours. There: its metadata pins no toolkit, a config inherits
``mmplug_involution::rednet/...``, and two processes started at once with
an empty kernel cache build the C++ kernels once and run the RedNet Mask
R-CNN on CPU through them.

About 3 minutes on 2 cores, most of it the kernels' first build.
"""
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
TOOLKITS = ('mmdet', 'mmsegmentation', 'mmpretrain', 'mmengine', 'mmcv')

pytestmark = pytest.mark.slow


def _run(*command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command],
                            capture_output=True,
                            text=True,
                            **kwargs)
    assert result.returncode == 0, (
        f'{" ".join(map(str, command))} failed:\n{result.stdout[-3000:]}\n'
        f'{result.stderr[-5000:]}')
    return result


def _mmcv_wheel() -> Path:
    """The mmcv wheel the set-up built for this torch (skip without one)."""
    folder = _run('bash', ROOT / 'tools' / 'dev' / 'mmcv_wheel.sh', '--dir',
                  sys.executable).stdout.strip()
    wheels = sorted(Path(folder).glob('mmcv-*.whl'))
    if not wheels:
        pytest.skip(f'no mmcv wheel in {folder}: run tools/dev/setup_env.sh')
    return wheels[0]


def _torch_closure() -> list:
    """The distributions torch needs, torch included (markers evaluated
    here): what the fresh environment shares with this one."""
    from packaging.requirements import Requirement
    names, todo = set(), ['torch']
    while todo:
        name = todo.pop()
        key = name.lower().replace('_', '-')
        if key in names:
            continue
        names.add(key)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate():
                todo.append(requirement.name)
    return [importlib.metadata.distribution(name) for name in sorted(names)]


def _share_torch(site: Path, shared: Path) -> None:
    """Make torch and what it needs importable in the environment whose
    site-packages is ``site``, by links to this environment's copies."""
    shared.mkdir()
    for dist in _torch_closure():
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {'..'}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (shared / top).exists():
                (shared / top).symlink_to(source)
    (site / 'shared_torch.pth').write_text(f'{shared}\n')


@pytest.fixture(scope='module')
def user_environment(tmp_path_factory):
    """(python of a fresh venv with torch, mmcv, mmdet and the wheel,
    folder outside the repository)."""
    mmcv_wheel = _mmcv_wheel()
    root = tmp_path_factory.mktemp('user_env')
    dist = root / 'dist'
    _run(sys.executable, '-m', 'build', '--outdir', dist, ROOT)
    wheel = next(dist.glob('mmplug_involution-*.whl'))
    venv = root / 'venv'
    _run(sys._base_executable, '-m', 'venv', venv)
    python = venv / 'bin' / 'python'
    site = Path(
        _run(python, '-c', 'import sysconfig; '
             'print(sysconfig.get_paths()["purelib"])').stdout.strip())
    _share_torch(site, root / 'shared_torch')
    pip = [python, '-m', 'pip', 'install', '--disable-pip-version-check']
    _run(
        *pip,
        '--find-links',
        mmcv_wheel.parent,
        'mmcv==2.1.0',
        'mmdet',
        cwd=root)
    _run(*pip, wheel, cwd=root)
    return python, root


def test_the_metadata_pins_no_toolkit(user_environment):
    python, root = user_environment
    requires = json.loads(
        _run(
            python,
            '-c', 'import importlib.metadata, json; print(json.dumps('
            'importlib.metadata.requires("mmplug-involution")))',
            cwd=root).stdout)
    named = {
        text.split(';')[0].strip()
        for text in requires if text.split(';')[0].strip().startswith(TOOLKITS)
    }
    assert named and not any('==' in text.split(';')[0]
                             for text in requires), requires
    for text in named:  # a floor and a ceiling: a range, not a pin
        assert '>=' in text and '<' in text, text
    listed = _run(python, '-m', 'pip', 'list', '--format=json', cwd=root)
    installed = {p['name'].lower() for p in json.loads(listed.stdout)}
    assert 'mmpretrain' not in installed and 'torchvision' not in installed


USER_SCRIPT = textwrap.dedent('''
    import json, sys, warnings
    import torch
    import mmplug_involution
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    warnings.filterwarnings('error', message='.*Falling back')
    cfg = Config.fromfile(sys.argv[1])
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).eval()
    sample = DetDataSample(metainfo=dict(
        img_shape=(96, 128), ori_shape=(96, 128), scale_factor=(1.0, 1.0)))
    with torch.no_grad(), torch.profiler.profile() as profile:
        result = model.predict(torch.randn(1, 3, 96, 128), [sample])
    print(json.dumps(dict(
        package=mmplug_involution.__file__,
        backbone=type(model.backbone).__name__,
        ops=sorted({event.key for event in profile.key_averages()
                    if 'mmplug_involution' in event.key}),
        masks=bool(result[0].pred_instances.get('masks') is not None))))
''')


def test_configs_and_kernels_come_with_the_install(user_environment):
    python, root = user_environment
    (root / 'my_config.py').write_text("_base_ = 'mmplug_involution::rednet/"
                                       "mask-rcnn_rednet50_fpn_1x_coco.py'\n")
    (root / 'predict.py').write_text(USER_SCRIPT)
    env = dict(
        os.environ,
        MMPLUG_CACHE_DIR=str(root / 'kernel_cache'),
        OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    env.pop('MMPLUG_INVOLUTION_BACKEND', None)
    processes = [
        subprocess.Popen([str(python), 'predict.py', 'my_config.py'],
                         cwd=root,
                         env=env,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         text=True) for _ in range(2)
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-5000:]
        found = json.loads(out.strip().splitlines()[-1])
        assert not found['package'].startswith(str(ROOT))
        assert '.mim' not in found['package']
        assert found['backbone'] == 'RedNet' and found['masks']
        assert 'mmplug_involution_cpu::generated_forward' in found['ops'], (
            found['ops'])
    built = sum(
        err.count('building the involution CPU kernels') for _, err in outputs)
    assert built == 1, [err[-2000:] for _, err in outputs]


def test_the_configs_have_an_index_mmengine_and_mim_read():
    """model-index.yml imports one metafile per config folder, and the
    metafiles list every config once, by its path."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    listed = []
    for metafile in index['Import']:
        models = yaml.safe_load((ROOT / metafile).read_text())['Models']
        for model in models:
            assert (ROOT / model['Config']).is_file(), model
            assert Path(model['Config']).stem == model['Name']
            listed.append(model['Config'])
    configs = sorted(
        str(path.relative_to(ROOT)) for path in ROOT.glob('configs/*/*.py')
        if path.parent.name != '_base_')
    assert sorted(listed) == configs
