"""The GPU validation kit: gathered here, run here with ``--cpu``, its
results folder never over the 8 files a GPU call brings back."""
import json
import subprocess
import tarfile

import pytest

from .common import ROOT, TOOLS, load_tool

KIT_LIMIT_MIB = 60
#: parts run.sh --cpu runs, and the GPU parts it skips with a line each
CPU_PARTS = ('install-wheels', 'build-mmcv', 'install-mmcv', 'import-check',
             'tests', 'operator-float32', 'backbone', 'demo')
SKIPPED_GPU_PARTS = ('sanitizer-memcheck', 'sanitizer-racecheck', 'tests-gpu',
                     'operator-cuda', 'backbone-cuda', 'demo-cuda')


def _statuses(summary: str) -> dict:
    rows = {}
    for line in summary.splitlines():
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        if len(cells) == 4 and cells[1] in ('ok', 'failed', 'timeout',
                                            'skipped'):
            rows[cells[0]] = (cells[1], cells[3])
    return rows


@pytest.fixture(scope='module')
def kit():
    """``tools/dev/gpu/prepare.sh``: the kit, within its size limit."""
    result = subprocess.run(
        ['bash', str(TOOLS / 'dev' / 'gpu' / 'prepare.sh')],
        cwd=ROOT,
        capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = ROOT / '.gpu-kit'
    size = sum(path.stat().st_size for path in folder.rglob('*')
               if path.is_file())
    assert size <= KIT_LIMIT_MIB * 2**20
    manifest = (folder / 'MANIFEST').read_text().splitlines()
    names = {line.split()[0].split('/')[-1].split('-')[0] for line in manifest}
    assert {
        'mmengine', 'mmdet', 'mmsegmentation', 'scipy', 'pycocotools', 'mmcv'
    } <= names
    # wheels for the GPU machine's Python 3.12: its own, the stable ABI or
    # pure Python
    assert all('cp312' in line or 'abi3' in line or '-py3' in line
               or '.py3' in line or 'sdist/' in line for line in manifest)
    return folder


@pytest.mark.slow
def test_run_cpu_installs_the_kit_and_runs_every_cpu_part(kit, tmp_path):
    out = tmp_path / 'out'
    result = subprocess.run(
        ['bash',
         str(TOOLS / 'dev' / 'gpu' / 'run.sh'), '--cpu',
         str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=None,
        timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(path.name for path in out.iterdir())
    assert written == sorted([
        'summary.md', 'tests.log', 'sanitizer.log', 'operator.md',
        'operator.json', 'backbone.md', 'backbone.json', 'logs.tar.gz'
    ])
    summary = (out / 'summary.md').read_text()
    statuses = _statuses(summary)
    for part in CPU_PARTS:
        assert statuses.get(part, ('missing', ''))[0] == 'ok', (part, summary)
    for part in SKIPPED_GPU_PARTS:
        status, note = statuses[part]
        assert status == 'skipped' and 'no GPU' in note
    assert 'passed' in (out / 'tests.log').read_text()
    operator = json.loads((out / 'operator.json').read_text())
    assert operator['float32']['rows']
    backbone = json.loads((out / 'backbone.json').read_text())
    assert {row['backbone']
            for row in backbone['rows']} == {'RedNet-50', 'ResNet-50 (mmdet)'}
    with tarfile.open(out / 'logs.tar.gz') as archive:
        names = archive.getnames()
    assert 'results/demo.json' in names
    assert 'logs/install-mmcv.log' in names


def test_summary_of_an_empty_run_is_written_within_8_files(tmp_path):
    summarize = load_tool(TOOLS / 'dev' / 'gpu' / 'summarize.py')
    work = tmp_path / 'work'
    (work / 'logs').mkdir(parents=True)
    (work / 'status.tsv').write_text('install-wheels\tfailed\t3\texit 1\n'
                                     'tests\tskipped\t0\tout of time\n')
    summarize.summarize(work, tmp_path / 'out', 'gpu')
    written = list((tmp_path / 'out').iterdir())
    assert len(written) <= 8
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert _statuses(summary) == {
        'install-wheels': ('failed', 'exit 1'),
        'tests': ('skipped', 'out of time')
    }
    assert 'no results' in summary


def test_summary_refuses_an_out_dir_that_would_exceed_8_files(tmp_path):
    summarize = load_tool(TOOLS / 'dev' / 'gpu' / 'summarize.py')
    (tmp_path / 'work').mkdir()
    out = tmp_path / 'out'
    out.mkdir()
    for index in range(3):
        (out / f'extra{index}.txt').write_text('x')
    with pytest.raises(SystemExit, match='more than the 8'):
        summarize.summarize(tmp_path / 'work', out, 'cpu')
