"""Write the GPU kit's results into OUT_DIR as at most 8 files.

Run by ``tools/dev/gpu/run.sh`` when it ends (also after a failure), with the
standard library only:

    python tools/dev/gpu/summarize.py WORK_DIR OUT_DIR --mode gpu|cpu

``WORK_DIR`` holds ``status.tsv`` (part, status, seconds, note), ``logs/``
(one log a part) and ``results/`` (``versions.json``, the benchmarks' JSON
and Markdown, ``demo.json``). Written:

1. ``summary.md``: machine and versions, every part's status and time, the
   key figures (operator totals and roofline fractions, backbone ratios,
   demo seconds per iteration, loss and peak memory);
2. ``tests.log``: the tests' output;
3. ``sanitizer.log``: memcheck and racecheck output;
4. ``operator.md`` and 5. ``operator.json``: the operator benchmark, one
   section (key) per dtype;
6. ``backbone.md`` and 7. ``backbone.json``: the backbone benchmark;
8. ``logs.tar.gz``: every log and result file.
"""
import argparse
import json
import tarfile
from pathlib import Path

MAX_FILES = 8
DTYPES = ('float32', 'float16', 'bfloat16')


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status_rows(work: Path):
    rows = []
    path = work / 'status.tsv'
    if path.exists():
        for line in path.read_text().splitlines():
            fields = (line.split('\t') + [''] * 4)[:4]
            rows.append(fields)
    return rows


def _operator_results(work: Path):
    """dtype -> the operator benchmark's JSON (CUDA, else CPU)."""
    results = {}
    for dtype in DTYPES:
        folder = work / 'results' / f'operator-{dtype}'
        for path in sorted(folder.glob('involution_*.json')):
            data = _read_json(path)
            if data is not None:
                results[dtype] = data
    return results


def _backbone_result(work: Path):
    folder = work / 'results' / 'backbone'
    for path in sorted(folder.glob('backbone_*.json')):
        data = _read_json(path)
        if data is not None:
            return data
    return None


def _operator_lines(results):
    lines = []
    for dtype, data in results.items():
        bandwidth = data.get('copy_bandwidth_gbs')
        lines.append(f'- {dtype}: ' + (
            f'copy bandwidth {bandwidth:.0f} GB/s' if bandwidth else 'CPU'))
        for total in data.get('totals', []):
            lines.append(
                f"  - {total['resolution']}, {total['impl']}: RedNet-50 "
                f"fwd+bwd {total['fwdbwd_ms']:.2f} ms "
                f"({total['vs_unfold']:.2f}x unfold)")
        roofline = [
            row for row in data.get('rows', []) if 'fwd_roofline' in row
        ]
        if roofline:
            fwd = [row['fwd_roofline'] for row in roofline]
            bwd = [row['bwd_roofline'] for row in roofline]
            lines.append(f'  - involution2d DRAM roofline fraction: forward '
                         f'{min(fwd):.0%}-{max(fwd):.0%}, backward '
                         f'{min(bwd):.0%}-{max(bwd):.0%}')
        dw = [
            row['fwdbwd_vs_depthwise'] for row in data.get('rows', [])
            if row.get('impl', '').startswith('involution2d')
        ]
        if dw:
            lines.append(f'  - involution2d fwd+bwd / depthwise conv: '
                         f'{min(dw):.2f}-{max(dw):.2f}')
    return lines


def _backbone_lines(data):
    lines = []
    for row in (data or {}).get('rows', []):
        if 'time_ratio' not in row:
            continue
        setting = ', '.join(
            str(row[key]) for key in ('mode', 'setting', 'precision')
            if key in row)
        lines.append(f"- {row.get('backbone')} ({setting}): "
                     f"{row['time_ratio']:.2f}x time, "
                     f"{row['mem_ratio']:.2f}x peak memory of its ResNet")
    return lines


def _demo_lines(data):
    if not data:
        return []
    keys = ('device', 'amp', 'iters', 'seconds_per_iter_median', 'losses',
            'peak_mib', 'torchvision_fallback')
    return [f'- {key}: {data[key]}' for key in keys if key in data]


def _concatenate(paths, target: Path) -> None:
    parts = []
    for path in paths:
        if path.exists():
            parts.append(f'===== {path.name} =====\n{path.read_text()}')
    target.write_text('\n'.join(parts) if parts else 'not run\n')


def summarize(work: Path, out: Path, mode: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    logs = work / 'logs'
    versions = _read_json(work / 'results' / 'versions.json') or {}
    statuses = _status_rows(work)
    operator = _operator_results(work)
    backbone = _backbone_result(work)
    demo = _read_json(work / 'results' / 'demo.json')

    lines = [
        f'# GPU kit results ({mode})', '',
        '| python | torch | CUDA | cuDNN | GPU | driver | CuPy |',
        '|---|---|---|---|---|---|---|', '| ' + ' | '.join(
            str(versions.get(key))
            for key in ('python', 'torch', 'cuda', 'cudnn', 'gpu', 'driver',
                        'cupy')) + ' |', '',
        '| part | status | seconds | note |', '|---|---|---|---|'
    ]
    lines += [
        f'| {name} | {status} | {seconds} | {note} |'
        for name, status, seconds, note in statuses
    ]
    for title, body in (('Operator', _operator_lines(operator)),
                        ('Backbone', _backbone_lines(backbone)),
                        ('Demo detector', _demo_lines(demo))):
        lines += ['', f'## {title}', ''] + (body or ['no results'])
    (out / 'summary.md').write_text('\n'.join(lines) + '\n')

    _concatenate([logs / 'tests.log'], out / 'tests.log')
    _concatenate(
        [logs / 'sanitizer-memcheck.log', logs / 'sanitizer-racecheck.log'],
        out / 'sanitizer.log')
    (out / 'operator.json').write_text(json.dumps(operator, indent=1))
    _concatenate([
        path for dtype in DTYPES
        for path in sorted((work / 'results' /
                            f'operator-{dtype}').glob('involution_*.md'))
    ], out / 'operator.md')
    (out / 'backbone.json').write_text(json.dumps(backbone, indent=1))
    _concatenate(
        sorted((work / 'results' / 'backbone').glob('*.md')),
        out / 'backbone.md')
    with tarfile.open(out / 'logs.tar.gz', 'w:gz') as archive:
        for name in ('logs', 'results', 'status.tsv'):
            if (work / name).exists():
                archive.add(work / name, arcname=name)
    written = sorted(path.name for path in out.iterdir())
    if len(written) > MAX_FILES:
        raise SystemExit(f'{out} holds {len(written)} files, more than the '
                         f'{MAX_FILES} a call brings back: {written}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('work')
    parser.add_argument('out')
    parser.add_argument('--mode', choices=('gpu', 'cpu'), default='gpu')
    args = parser.parse_args()
    summarize(Path(args.work), Path(args.out), args.mode)
    print((Path(args.out) / 'summary.md').read_text())


if __name__ == '__main__':
    main()
