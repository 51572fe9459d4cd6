"""Plot training curves from mmengine's logged scalars, several runs at once.

Reads each run's ``vis_data/scalars.json`` (what mmengine's LocalVisBackend
writes under ``<work dir>/<timestamp>/``; a work dir picks its newest run
that has one, or give the file itself) and draws one panel per key against
the iteration, one line per run (a log axis where a key's values span more
than 20x). Validation metrics (``coco/bbox_mAP``, ``mIoU``, ...) are logged
with the iteration they were measured at and are drawn as points.

Example:
    python tools/analysis/plot_training_curves.py \\
        work_dirs/demo_mask-rcnn_coco-shapes work_dirs/demo_dcd \\
        --labels involution DCD --keys loss loss_mask --out curves.png
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(
        description='Plot logged losses and metrics of training runs.')
    parser.add_argument(
        'runs', nargs='+', help='work dirs or vis_data/scalars.json files')
    parser.add_argument(
        '--keys',
        nargs='+',
        default=['loss'],
        help='logged scalars to draw, one panel each '
        '(default: loss)')
    parser.add_argument(
        '--labels',
        nargs='+',
        help='one legend label per run (default: the paths)')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--out', required=True, help='image file to write')
    return parser.parse_args()


def find_scalars(run: str) -> str:
    """The scalars.json of ``run``: the file, or a work dir's newest."""
    if osp.isfile(run):
        return run
    found = sorted(glob.glob(osp.join(run, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(
            f'{run}: no <timestamp>/vis_data/scalars.json here; give a work '
            'dir that tools/train.py wrote (LocalVisBackend, the default of '
            'every config) or the scalars.json itself.')
    return found[-1]


def read_scalars(path: str) -> Dict[str, List[tuple]]:
    """{key: [(iteration, value), ...]} from one scalars.json."""
    series: Dict[str, List[tuple]] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f'{path}, line {number}: not JSON ({error})') from None
            step = record.get('step', record.get('iter'))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != 'step':
                    series.setdefault(key, []).append((step, value))
    return series


def plot(runs: List[Dict[str, List[tuple]]],
         labels: List[str],
         keys: List[str],
         out: str,
         title: str = None) -> None:
    """One panel per key, one line (or points, for metrics) per run."""
    figure, axes = plt.subplots(
        1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        for series, label in zip(runs, labels):
            if key not in series:
                continue
            steps, values = zip(*series[key])
            if len(values) > 3:
                axis.plot(steps, values, label=label, linewidth=1)
            else:
                axis.plot(steps, values, 'o', label=label)
        axis.set_title(key)
        axis.set_xlabel('iteration')
        axis.grid(alpha=0.3)
        values = [v for series in runs for _, v in series.get(key, [])]
        if values and min(values) > 0 and max(values) > 20 * min(values):
            axis.set_yscale('log')  # losses and gradient norms over decades
    axes[0][0].legend(fontsize='small')
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main():
    args = parse_args()
    labels = args.labels or args.runs
    if len(labels) != len(args.runs):
        sys.exit(f'--labels: {len(labels)} labels for {len(args.runs)} runs')
    try:
        runs = [read_scalars(find_scalars(run)) for run in args.runs]
    except (OSError, ValueError) as error:
        sys.exit(str(error))
    for key in args.keys:
        if not any(key in series for series in runs):
            logged = sorted(set().union(*runs))
            sys.exit(f'--keys: no run logged {key!r}; logged: '
                     f'{", ".join(logged)}')
    plot(runs, labels, args.keys, args.out, args.title)
    print(f'Wrote {args.out}')


if __name__ == '__main__':
    main()
