"""Measuring helpers shared by the benchmark tools beside this file.

Time: median wall-clock of repeated runs (CUDA synchronised). Memory: the peak
a call adds on top of what was live before it: ``max_memory_allocated`` on
CUDA; on CPU the rise of the process's peak resident set size (VmHWM, reset
through /proc/self/clear_refs, Linux) after glibc's ``malloc_trim(0)`` has
returned every free page, so pages the call touches count even when the
allocator reuses freed memory. That trim also empties the allocator's cache,
so measure time before memory, after enough warm-up steps for the allocator
to reach its steady state (on CPU, glibc's adaptive mmap threshold takes a few
steps of a large model).
"""
import ctypes
import datetime
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = [
    'MemoryMeter', 'RESNET50_STAGE3_SETTINGS', 'add_plot_only_argument',
    'add_ratios', 'device_line', 'environment', 'layer_inference',
    'layer_training_step', 'measure', 'measure_all', 'median_ms', 'peak_mib',
    'plot_time_and_memory', 'replot', 'resolve_device', 'times_ms',
    'write_results'
]

# The input of ResNet-50's stage 3 (256-channel 3x3 convs), where the layer
# benchmarks compare with a conv: name -> (batch, height, width).
RESNET50_STAGE3_SETTINGS = {
    '14x14, batch 32': (32, 14, 14),  # ImageNet, 224x224
    '50x76, batch 2': (2, 50, 76),  # stride-16 map of an 800x1216 image
}


class MemoryMeter:
    """Peak memory (MiB) allocated by a call, above what was live before it."""

    def __init__(self, device):
        self.device = device
        self.libc = ctypes.CDLL('libc.so.6') if device.type == 'cpu' else None

    @staticmethod
    def _status_mib(field):
        status = Path('/proc/self/status').read_text()
        return int(re.search(rf'{field}:\s+(\d+)', status).group(1)) / 1024

    def start(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.libc.malloc_trim(0)
            Path('/proc/self/clear_refs').write_text('5')
            self.base = self._status_mib('VmRSS')

    def stop(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = self._status_mib('VmHWM')
        return peak - self.base


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) that one call of ``fn`` adds."""
    meter = MemoryMeter(device)
    meter.start()
    fn()
    return meter.stop()


def times_ms(fn: Callable[[], object], device: torch.device,
             repeats: int) -> List[float]:
    """Wall-clock times of ``repeats`` calls of ``fn``, in ms."""
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], object], device: torch.device,
              repeats: int) -> float:
    """Median wall-clock time of ``repeats`` calls of ``fn``, in ms."""
    return statistics.median(times_ms(fn, device, repeats))


def measure(fn: Callable[[], object], device: torch.device, repeats: int,
            warmup: int) -> dict:
    """``warmup`` untimed calls, then time (median, min, max of ``repeats``
    calls, ms) and, after the timing, the peak memory one call adds (MiB)."""
    for _ in range(warmup):
        fn()
    times = times_ms(fn, device, repeats)
    return dict(
        ms=statistics.median(times),
        ms_min=min(times),
        ms_max=max(times),
        peak_mib=peak_mib(fn, device))


def measure_all(fns: Dict[str, Callable[[], object]], device: torch.device,
                repeats: int, warmup: int) -> Dict[str, dict]:
    """:func:`measure` for several calls compared with each other.

    The warm-up goes round-robin over all of them first (``warmup`` rounds):
    the first work in a fresh process runs slow for a while (measured on
    CPU: 35% over several calls), which would otherwise fall on whichever
    is measured first. Then each is timed, ``repeats`` calls back to back,
    and its peak memory taken.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    return {name: measure(fn, device, repeats, 1) for name, fn in fns.items()}


def layer_inference(module: torch.nn.Module, x: torch.Tensor) -> None:
    """What a layer benchmark times for inference: a forward, no grad."""
    with torch.no_grad():
        module(x)


def layer_training_step(module: torch.nn.Module, x: torch.Tensor) -> None:
    """What a layer benchmark times for training: forward, mean, backward."""
    module(x).mean().backward()
    module.zero_grad(set_to_none=True)


def add_ratios(rows: List[dict], is_baseline_of: Callable[[dict, dict],
                                                          bool]) -> None:
    """Add ``time_ratio`` and ``memory_ratio`` to each row: its ``ms`` and
    ``peak_mib`` over those of the row ``r`` with ``is_baseline_of(r,
    row)``."""
    for row in rows:
        base = next(r for r in rows if is_baseline_of(r, row))
        row['time_ratio'] = row['ms'] / base['ms']
        row['memory_ratio'] = row['peak_mib'] / max(base['peak_mib'], 1e-9)


def device_line(env: dict) -> str:
    """The first line of a results table: device, threads, torch, date."""
    return (f"Device: {env.get('gpu') or env['cpu']} ({env['device']}, "
            f"{env['threads']} threads); torch {env['torch']}; {env['date']}")


def environment(device):
    info = dict(
        date=datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec='seconds'),
        python=platform.python_version(),
        torch=torch.__version__,
        machine=platform.machine(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        threads=torch.get_num_threads())
    try:
        import cupy
        info['cupy'] = cupy.__version__
    except ImportError:
        info['cupy'] = None
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    return info


def _cpu_name():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> cuda if available else cpu; refuse CUDA without a GPU."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {name} requested but torch sees no CUDA '
                         'device.')
    return device


def plot_time_and_memory(path: str,
                         result: dict,
                         groups: Sequence[str],
                         series: Sequence[str],
                         time_key: str = 'ms',
                         memory_key: str = 'peak_mib',
                         select: Optional[Callable[[dict], bool]] = None,
                         time_label: str = 'time (ms, median)') -> None:
    """Draw ``result['rows']`` as horizontal bars on log axes, time beside
    peak memory: one block per distinct value of the ``groups`` keys (a shape,
    a setting), one bar per distinct value of the ``series`` keys (an
    implementation, a backbone). ``select`` keeps only some rows. Writes a
    PNG to ``path``, titled with the run's device and date."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in result['rows'] if select is None or select(r)]

    def label(row, keys):
        return ', '.join(str(row[key]) for key in keys)

    blocks = list(dict.fromkeys(label(r, groups) for r in rows))
    bars = list(dict.fromkeys(label(r, series) for r in rows))
    height = 0.8 / len(bars)
    figure, axes = plt.subplots(
        1,
        2,
        figsize=(12,
                 0.16 * len(blocks) * len(bars) + 0.25 * len(blocks) + 1.4))
    for axis, key, title in ((axes[0], time_key, time_label),
                             (axes[1], memory_key, 'peak memory (MiB)')):
        for index, bar in enumerate(bars):
            values = {
                label(r, groups): r[key]
                for r in rows if label(r, series) == bar
            }
            positions = [
                i - 0.4 + (index + 0.5) * height
                for i, block in enumerate(blocks) if block in values
            ]
            axis.barh(
                positions,
                [max(values[b], 1e-3) for b in blocks if b in values],
                height=height,
                label=bar)
        axis.set_xscale('log')
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel(title)
        axis.set_yticks(range(len(blocks)))
        axis.set_yticklabels(blocks if axis is axes[0] else [], fontsize=7)
        axis.invert_yaxis()
        axis.grid(axis='x', alpha=0.3)
    columns = min(len(bars), 3)
    figure.legend(
        *axes[0].get_legend_handles_labels(),
        loc='lower center',
        ncol=columns,
        fontsize=7,
        frameon=False)
    figure.suptitle(device_line(result['environment']), fontsize=8)
    legend_rows = -(-len(bars) // columns)
    inches = figure.get_figheight()
    figure.tight_layout(
        rect=(0, 0.25 * legend_rows / inches, 1, 1 - 0.3 / inches))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def replot(json_path: str, plot: dict) -> None:
    """``--plot-only``: draw ``<json>.png`` from an earlier run's results
    (:func:`plot_time_and_memory` with ``plot``)."""
    path = Path(json_path)
    try:
        result = json.loads(path.read_text())
        rows, _ = result['rows'], result['environment']
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f'--plot-only {json_path}: not the results of a '
                         f'benchmark run ({error!r})') from None
    if not rows:
        raise SystemExit(f'--plot-only {json_path}: no rows to plot')
    out = path.with_suffix('.png')
    plot_time_and_memory(str(out), result, **plot)
    print(f'Plot written to {out}')


def write_results(out_dir: str,
                  stem: str,
                  result: dict,
                  markdown: str,
                  plot: Optional[dict] = None) -> None:
    """Write ``<out_dir>/<stem>.json`` and ``.md`` and print the table; with
    ``plot`` (:func:`plot_time_and_memory`'s keyword arguments) also
    ``<stem>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{stem}.json').write_text(json.dumps(result, indent=2))
    (out / f'{stem}.md').write_text(markdown)
    written = '.json and .md'
    if plot is not None:
        plot_time_and_memory(str(out / f'{stem}.png'), result, **plot)
        written = '.json, .md and .png'
    print('\n' + markdown)
    print(f'Results written to {out / stem}{written}')


def add_benchmark_arguments(parser, settings, warmup: int) -> None:
    """``--device``, ``--repeats``, ``--warmup``, ``--settings``, ``--out``.

    ``settings`` are the names a run may choose from (all by default).
    """
    parser.add_argument(
        '--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument(
        '--repeats',
        type=int,
        default=5,
        help='timed calls per measurement (median)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=warmup,
        help='untimed calls first (allocator, kernels)')
    parser.add_argument(
        '--settings',
        nargs='+',
        choices=list(settings),
        default=list(settings))
    parser.add_argument('--out', default='benchmark_results')
    add_plot_only_argument(parser)


def add_plot_only_argument(parser) -> None:
    """``--plot-only JSON``, for :func:`replot`."""
    parser.add_argument(
        '--plot-only',
        metavar='JSON',
        help="redraw the plot of an earlier run's results "
        '(its .json, written beside it as .png) and exit')
