"""Command-line tools run end to end (small inputs)."""
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from mmengine.config import Config

from mmplug_involution.apis import build_config_model

ROOT = Path(__file__).parents[2]
BENCHMARKS = ROOT / 'tools' / 'dev' / 'benchmarks'


def _run_benchmark(script, *args):
    """``tools/dev/benchmarks/<script> --device cpu *args``, which must
    pass."""
    return subprocess.run(
        [sys.executable,
         str(BENCHMARKS / script), '--device', 'cpu', *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT)


def _assert_png(path, min_height=200):
    """``path`` is a PNG a figure was drawn into (12 inches wide)."""
    image = matplotlib.image.imread(path)
    assert image.shape[1] == 1320 and image.shape[0] >= min_height
    assert image[..., :3].std() > 0.05  # not blank


def test_get_complexity_cli():
    result = subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'analysis' / 'get_complexity.py'),
        str(ROOT / 'configs' / 'rednet' /
            'rednet26_32xb64-warmup-coslr_in1k.py'), '--shape', '224'
    ],
                            capture_output=True,
                            text=True,
                            check=True,
                            cwd=ROOT)
    assert 'params:  9.23 M' in result.stdout
    assert 'FLOPs:   1.70 G' in result.stdout
    assert 'involution2d' not in result.stdout  # counted, not listed


@pytest.mark.parametrize('depth', [26, 38, 50, 101, 152])
def test_rednet_imagenet_configs_build(depth):
    cfg = Config.fromfile(
        str(ROOT / 'configs' / 'rednet' /
            f'rednet{depth}_32xb64-warmup-coslr_in1k.py'))
    model = build_config_model(cfg)
    assert model.backbone.depth == depth
    assert model.backbone.stem_kernel_size == 3
    assert model.head.fc.out_features == 1000


def test_operator_demo_benchmark(tmp_path):
    """The README's main job (quick operator benchmark) runs and writes."""
    result = subprocess.run([
        sys.executable,
        str(BENCHMARKS / 'benchmark_involution.py'), '--quick', '--repeats',
        '1', '--out',
        str(tmp_path)
    ],
                            capture_output=True,
                            text=True,
                            check=True,
                            cwd=ROOT)
    assert 'involution2d[pytorch]' in result.stdout
    table = (tmp_path / 'involution_cpu_quick.md').read_text()
    # 3 shapes x 6 implementations (cpp and the depthwise conv in both
    # memory formats, pytorch, unfold), then a total per implementation
    assert table.count('| imagenet |') == 3 * 6 + 6
    assert '| involution2d[cpp] channels_last |' in table
    result = json.loads((tmp_path / 'involution_cpu_quick.json').read_text())
    assert all(row['fwd_vs_depthwise'] > 0 for row in result['rows'])
    _assert_png(tmp_path / 'involution_cpu_quick.png')


def test_backbone_benchmark_runs_and_compares_formats(tmp_path):
    _run_benchmark('benchmark_backbone.py', '--modes', 'infer', '--settings',
                   '224 px, batch 1', '--backbones', 'RedNet-26',
                   'ResNet-50 (mmdet)', '--warmup', '0', '--repeats', '1',
                   '--out', str(tmp_path))
    rows = json.loads((tmp_path / 'backbone_cpu.json').read_text())['rows']
    assert {(r['backbone'], r['format'])
            for r in rows} == {(b, f)
                               for b in ('RedNet-26', 'ResNet-50 (mmdet)')
                               for f in ('nchw', 'channels_last')}
    # one ratio per backbone, on its faster format
    assert sum('time_ratio' in r for r in rows) == 2
    _assert_png(tmp_path / 'backbone_cpu.png')


def test_backbone_benchmark_folds_bn_for_inference(tmp_path):
    _run_benchmark('benchmark_backbone.py', '--modes', 'infer', '--settings',
                   '224 px, batch 1', '--backbones', 'RedNet-26',
                   'ResNet-50 (mmdet)', '--formats', 'channels_last',
                   '--fuse-conv-bn', '--warmup', '0', '--repeats', '1',
                   '--out', str(tmp_path))
    assert 'fuse_conv_bn' in (tmp_path / 'backbone_cpu.md').read_text()
    rows = json.loads((tmp_path / 'backbone_cpu.json').read_text())['rows']
    assert len(rows) == 2


@pytest.mark.parametrize('tool,stem,rows', [
    ('benchmark_dynamic_conv.py', 'dynamic_conv_cpu', 7 * 2),
    ('benchmark_xvolution.py', 'xvolution_cpu', 2 + 2 * 3 + 2),
])
def test_layer_benchmarks_run_and_write_their_tables(tmp_path, tool, stem,
                                                     rows):
    subprocess.run([
        sys.executable,
        str(BENCHMARKS / tool), '--device', 'cpu', '--settings',
        '14x14, batch 32', '--warmup', '0', '--repeats', '1', '--out',
        str(tmp_path)
    ],
                   capture_output=True,
                   text=True,
                   check=True,
                   cwd=ROOT)
    table = (tmp_path / f'{stem}.md').read_text()
    assert table.count('| 14x14, batch 32 |') == rows
    result = json.loads((tmp_path / f'{stem}.json').read_text())
    assert len(result['rows']) == rows
    assert all(row['ms'] > 0 and row['peak_mib'] >= 0
               for row in result['rows'])
    _assert_png(tmp_path / f'{stem}.png')


def _run_on_rednet50(tool, tmp_path, *args):
    """``tool`` on RedNet-50 at 224x224, batch 1, results into tmp_path."""
    subprocess.run([
        sys.executable,
        str(BENCHMARKS / tool), '--models', 'RedNet-50', '--settings',
        '224x224, batch 1', *args, '--out',
        str(tmp_path)
    ],
                   capture_output=True,
                   text=True,
                   check=True,
                   cwd=ROOT)


def test_deploy_benchmark_runs_and_writes_table_and_plot(tmp_path):
    _run_on_rednet50('benchmark_deploy.py', tmp_path, '--warmup', '0',
                     '--repeats', '1')
    rows = json.loads((tmp_path / 'deploy_cpu.json').read_text())['rows']
    assert [r['runtime'] for r in rows] == [
        'PyTorch eager', 'ONNX Runtime', 'OpenVINO f32, standard ops',
        'OpenVINO f32', 'OpenVINO default'
    ]
    assert rows[0]['time_ratio'] == 1
    assert all(r['time_ratio'] > 0 and r['compile_s'] > 0 for r in rows[1:])
    _assert_png(tmp_path / 'deploy_cpu.png')


def test_openvino_profile_sums_node_times_by_type(tmp_path):
    _run_on_rednet50('profile_openvino.py', tmp_path, '--warmup', '1',
                     '--calls', '1')
    rows = json.loads((tmp_path / 'profile_openvino.json').read_text())['rows']
    assert [row['precision'] for row in rows] == ['f32', 'default']
    for row in rows:  # the extension's ops ran, beside the convolutions
        assert row['node_ms']['Reference'] > 0
        assert row['node_ms']['Convolution'] > 0
        assert row['total_ms'] == pytest.approx(sum(row['node_ms'].values()))
    assert '| RedNet-50 | f32 |' in (tmp_path /
                                     'profile_openvino.md').read_text()


def _scalars(path, losses, metric):
    path.parent.mkdir(parents=True)
    lines = [
        json.dumps(
            dict(loss=loss, loss_mask=loss / 2, lr=0.01, iter=step, step=step))
        for step, loss in enumerate(losses, 1)
    ]
    lines.append(json.dumps({'coco/bbox_mAP': metric, 'step': len(losses)}))
    path.write_text('\n'.join(lines) + '\n')


def test_plot_training_curves_draws_each_run_and_key(tmp_path):
    tool = str(ROOT / 'tools' / 'analysis' / 'plot_training_curves.py')
    _scalars(tmp_path / 'a' / '20261201_000000' / 'vis_data' / 'scalars.json',
             [2.0, 1.5, 1.2, 1.0, 0.9], 0.2)
    other = tmp_path / 'b' / 'vis_data' / 'scalars.json'
    _scalars(other, [2.2, 1.4, 1.1, 0.95, 0.8], 0.25)
    out = tmp_path / 'curves.png'
    result = subprocess.run([
        sys.executable, tool,
        str(tmp_path / 'a'),
        str(other), '--labels', 'seed 0', 'seed 1', '--keys', 'loss',
        'loss_mask', 'coco/bbox_mAP', '--out',
        str(out)
    ],
                            capture_output=True,
                            text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (374, 1386)  # 3 panels of 4.2 x 3.4 in
    for args, message in (
        (['--keys', 'loss_typo'], "no run logged 'loss_typo'; logged: "
         'coco/bbox_mAP, iter, loss, loss_mask, lr'),
        (['--labels', 'one', 'two'], '2 labels for 1 runs'),
    ):
        result = subprocess.run(
            [sys.executable, tool,
             str(other), '--out',
             str(out), *args],
            capture_output=True,
            text=True,
            cwd=ROOT)
        assert result.returncode == 1 and message in result.stderr
    (tmp_path / 'empty').mkdir()
    result = subprocess.run(
        [sys.executable, tool,
         str(tmp_path / 'empty'), '--out',
         str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT)
    assert result.returncode == 1
    assert 'no <timestamp>/vis_data/scalars.json here' in result.stderr
    other.write_text('{"loss": 1.0, "step": 1}\nnot json\n')
    result = subprocess.run(
        [sys.executable, tool,
         str(other), '--out',
         str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT)
    assert result.returncode == 1 and 'line 2: not JSON' in result.stderr


def test_generated_involution_benchmark_runs(tmp_path):
    _run_benchmark('benchmark_generated_involution.py', '--quick',
                   '--resolutions', 'imagenet', '--repeats', '1', '--out',
                   str(tmp_path))
    rows = json.loads(
        (tmp_path / 'generated_involution_cpu_quick.json').read_text())['rows']
    # 3 shapes x 2 passes x 3 implementations x 2 formats
    assert len(rows) == 3 * 2 * 3 * 2
    baselines = [r for r in rows if r['time_ratio'] == 1.0]
    assert {r['implementation'] for r in baselines} == {'depthwise + 1x1'}
    assert len(baselines) == 3 * 2  # one per shape and pass
    _assert_png(tmp_path / 'generated_involution_cpu_quick.png')


def test_backbone_profile_accounts_for_the_step(tmp_path):
    _run_benchmark('profile_backbone.py', '--backbones', 'RedNet-26',
                   'ResNet-50 (mmdet)', '--mode', 'train', '--setting',
                   '224 px, batch 1', '--steps', '1', '--warmup', '0', '--out',
                   str(tmp_path))
    rows = json.loads(
        (tmp_path / 'profile_train_cpu.json').read_text())['rows']
    for backbone in ('RedNet-26', 'ResNet-50 (mmdet)'):
        kinds = {r['kind']: r for r in rows if r['backbone'] == backbone}
        assert sum(r['share'] for r in kinds.values()) == pytest.approx(1)
        assert kinds['block 1x1 convs (conv1, conv3, downsample)']['ms'] > 0
        assert 'other convs' not in kinds  # every conv found its module
    rednet = {r['kind'] for r in rows if r['backbone'] == 'RedNet-26'}
    assert {
        'involution ops (span conv + aggregation)',
        'involution kernel generator: reduce conv'
    } <= rednet
    assert 'block 3x3 convs' in {
        r['kind']
        for r in rows if r['backbone'] == 'ResNet-50 (mmdet)'
    }
