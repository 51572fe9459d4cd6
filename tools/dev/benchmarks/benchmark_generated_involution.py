"""Benchmark the involution with its kernel generation against the static
convs of the same shape.

For every involution shape of RedNet-50 (``benchmark_involution.py``'s
shapes, at ImageNet and detection resolution), float32:
  * ``generated_involution2d``: the involution layer's op, its span conv
    (the kernel generator's last 1x1 conv, R = C/4 -> G*K*K) included; in
    channels_last and NCHW;
  * ``span conv + involution2d``: that conv, then the involution of the
    written kernel (the unfused path);
  * ``depthwise + 1x1``: a depthwise KxK conv of the input plus the same
    1x1 conv (R -> G*K*K) of the reduced features, the static convs of the
    same sizes, in both memory formats.
Forward alone and forward+backward (gradient of the sum w.r.t. every
input and weight): median of ``--repeats`` calls after a round-robin warm-up
and peak memory (``harness.measure_all``), ratios against ``depthwise +
1x1`` in its faster format.

Usage:
    python tools/dev/benchmarks/benchmark_generated_involution.py  # auto
    python tools/dev/benchmarks/benchmark_generated_involution.py --quick
Writes ``<out>/generated_involution_<device>.json``, ``.md`` and ``.png``.
"""
import argparse
import functools

import torch
import torch.nn.functional as F
from benchmark_involution import (GROUP_CHANNELS, RESOLUTIONS, shape_label,
                                  shapes)

from mmplug_involution.ops import generated_involution2d, involution2d
from harness import (add_plot_only_argument, add_ratios, device_line,
                     environment, measure_all, replot, resolve_device,
                     write_results)

REDUCTION = 4
FORMATS = {
    'channels_last': torch.channels_last,
    'nchw': torch.contiguous_format
}
BASELINE = 'depthwise + 1x1'

PLOT = dict(
    groups=('resolution', 'shape', 'pass'),
    series=('implementation', 'format'))


def make_tensors(shape, device, memory_format):
    """input, reduced, span weight and bias, depthwise weight (leaves)."""
    n, c, h, w, k, s = (shape[key] for key in 'nchwks')
    ho, wo = -(-h // s), -(-w // s)
    gkk = c // GROUP_CHANNELS * k * k
    r = c // REDUCTION
    tensors = dict(
        input=torch.randn(n, c, h, w, device=device),
        reduced=torch.randn(n, r, ho, wo, device=device),
        weight=torch.randn(gkk, r, 1, 1, device=device) * r**-0.5,
        bias=torch.zeros(gkk, device=device),
        depthwise=torch.randn(c, 1, k, k, device=device) / k)
    return {
        name: (t.contiguous(memory_format=memory_format)
               if name in ('input', 'reduced') else t).requires_grad_(True)
        for name, t in tensors.items()
    }


def implementations(shape):
    """name -> fn(tensors) returning the outputs summed into the loss."""
    k, s = shape['k'], shape['s']

    def generated(t):
        return generated_involution2d(t['input'], t['reduced'], t['weight'],
                                      t['bias'], k, s)

    def unfused(t):
        kernel = F.conv2d(t['reduced'], t['weight'], t['bias'])
        return involution2d(t['input'], kernel, k, s)

    def static(t):
        out = F.conv2d(
            t['input'],
            t['depthwise'],
            stride=s,
            padding=(k - 1) // 2,
            groups=t['input'].shape[1])
        kernel = F.conv2d(t['reduced'], t['weight'], t['bias'])
        return out, kernel

    return {
        'generated_involution2d': generated,
        'span conv + involution2d': unfused,
        BASELINE: static
    }


def step(fn, tensors, backward):
    """One call: ``fn`` alone under no_grad, or ``fn`` and the backward of
    the sum of its outputs."""
    if not backward:
        with torch.no_grad():
            fn(tensors)
        return
    outputs = fn(tensors)
    outputs = outputs if isinstance(outputs, tuple) else (outputs, )
    sum(out.sum() for out in outputs).backward()
    for t in tensors.values():
        t.grad = None


def run(shape, resolution, device, args):
    rows = []
    for backward in (False, True):
        fns = {}
        for name, fn in implementations(shape).items():
            for layout, memory_format in FORMATS.items():
                fns[name, layout] = functools.partial(
                    step, fn, make_tensors(shape, device, memory_format),
                    backward)
        results = measure_all(fns, device, args.repeats, warmup=1)
        for (name, layout), result in results.items():
            rows.append({
                'resolution': resolution,
                'shape': shape['label'],
                'pass': 'fwd+bwd' if backward else 'fwd',
                'implementation': name,
                'format': layout,
                **result
            })
    return rows


def faster_baseline(rows, row):
    """The row of ``depthwise + 1x1`` in its faster format for ``row``'s
    resolution, shape and pass."""
    return min((r for r in rows if r['implementation'] == BASELINE and all(
        r[key] == row[key] for key in ('resolution', 'shape', 'pass'))),
               key=lambda r: r['ms'])


def to_markdown(result):
    env = result['environment']
    lines = [
        f'{device_line(env)}; float32; median of {result["repeats"]} calls; '
        f'ratios against `{BASELINE}` in its faster format.', '',
        '| resolution | shape (N,C,H,W) K/s | pass | implementation | '
        'format | ms | peak MiB | time / static | memory / static |',
        '|' + '---|' * 9
    ]
    for row in result['rows']:
        lines.append(
            f"| {row['resolution']} | {row['shape']} | {row['pass']} | "
            f"{row['implementation']} | {row['format']} | {row['ms']:.2f} | "
            f"{row['peak_mib']:.0f} | {row['time_ratio']:.2f} | "
            f"{row['memory_ratio']:.2f} |")
    return '\n'.join(lines) + '\n'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument(
        '--resolutions',
        nargs='+',
        choices=list(RESOLUTIONS),
        default=list(RESOLUTIONS))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--quick',
        action='store_true',
        help='three shapes at a quarter of the batch')
    parser.add_argument('--out', default='benchmark_results')
    add_plot_only_argument(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.plot_only:
        return replot(args.plot_only, PLOT)
    device = resolve_device(args.device)
    rows = []
    for resolution in args.resolutions:
        for shape in shapes(resolution, args.quick):
            shape['label'] = f"{shape['name']} {shape_label(shape)}"
            new = run(shape, resolution, device, args)
            print(
                f"{resolution} {shape['label']}: " +
                ', '.join(f"{r['implementation']} {r['format']} {r['pass']} "
                          f"{r['ms']:.1f} ms" for r in new),
                flush=True)
            rows += new
    add_ratios(rows, lambda base, row: base is faster_baseline(rows, row))
    result = dict(
        environment=dict(environment(device), device=str(device)),
        repeats=args.repeats,
        rows=rows)
    suffix = '_quick' if args.quick else ''
    write_results(args.out, f'generated_involution_{device.type}{suffix}',
                  result, to_markdown(result), PLOT)


if __name__ == '__main__':
    main()
