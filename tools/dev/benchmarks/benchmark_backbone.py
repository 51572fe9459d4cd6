"""Benchmark backbones: RedNet beside mmdet's ResNet, training and inference.

Training step = forward, loss = sum of the means of every output stage,
backward (no optimizer step), BN in training mode, nothing frozen. Inference
= eval mode under ``torch.no_grad``. Each model runs in each memory format
asked for (NCHW and channels_last: the model and its input converted). For
each mode, setting and precision every (backbone, format) is built, warmed
up, then stepped in turn, one step each, round after round (``--repeats``
rounds), so that a shared machine's drift reaches every model alike; then
the peak memory one step adds on top of the model and input
(``tools/dev/benchmarks/harness.py``). Reported: median (and range) of each
model's steps. Ratios compare each RedNet with the ResNet of its depth
class in the same mode and setting, each in its faster memory format.

Settings: ImageNet size (224x224, batch 1, 8 and 32) and detection size
(800x1216, batch 1 and 2); on CUDA in fp32 and with AMP (fp16 autocast) too.

Usage:
    python tools/dev/benchmarks/benchmark_backbone.py        # everything
    python tools/dev/benchmarks/benchmark_backbone.py --modes infer \
        --settings "224 px, batch 1"
    python tools/dev/benchmarks/benchmark_backbone.py --modes infer \
        --fuse-conv-bn
    python tools/dev/benchmarks/benchmark_backbone.py --device cuda \
        --repeats 10
Writes ``<out>/backbone_<device>.json``, ``.md`` and ``.png`` (each
backbone in its faster format, per mode and setting).
"""
import argparse
import functools
import statistics

import torch
from mmcv.cnn import fuse_conv_bn
from mmengine.registry import MODELS, init_default_scope

import mmplug_involution  # noqa: F401  (registers RedNet)
from harness import (add_benchmark_arguments, device_line, environment,
                     peak_mib, replot, resolve_device, times_ms, write_results)

BACKBONES = {
    'RedNet-26': dict(type='RedNet', depth=26),
    'RedNet-50': dict(type='RedNet', depth=50),
    'RedNet-101': dict(type='RedNet', depth=101),
    'ResNet-50 (mmdet)': dict(type='mmdet.ResNet', depth=50),
    'ResNet-101 (mmdet)': dict(type='mmdet.ResNet', depth=101),
}
SETTINGS = {
    # name: (batch, height, width)
    '224 px, batch 1': (1, 224, 224),
    '224 px, batch 8': (8, 224, 224),
    '224 px, batch 32': (32, 224, 224),
    '800x1216, batch 1': (1, 800, 1216),
    '800x1216, batch 2': (2, 800, 1216),
}
FORMATS = {
    'nchw': torch.contiguous_format,
    'channels_last': torch.channels_last
}


def build(cfg, device, memory_format):
    model = MODELS.build(dict(cfg, norm_eval=False, frozen_stages=-1))
    return model.to(device, memory_format=memory_format)


def train_step(model, images, amp):
    model.train()  # mmdet's ResNet.train returns None, not self
    with torch.autocast(images.device.type, enabled=amp):
        outs = model(images)
        loss = sum(o.float().mean() for o in outs)
    loss.backward()
    model.zero_grad(set_to_none=True)


def inference(model, images, amp):
    model.eval()
    with torch.no_grad(), torch.autocast(images.device.type, enabled=amp):
        model(images)


MODES = {'train': train_step, 'infer': inference}

#: plot_time_and_memory's arguments: each backbone in its faster format
PLOT = dict(
    groups=('mode', 'setting', 'precision'),
    series=('backbone', ),
    time_key='step_ms',
    select=lambda row: 'time_ratio' in row,
    time_label='step time (ms, median)')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--backbones',
        nargs='+',
        choices=list(BACKBONES),
        default=list(BACKBONES))
    parser.add_argument(
        '--modes', nargs='+', choices=list(MODES), default=list(MODES))
    parser.add_argument(
        '--formats', nargs='+', choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='inference: fold BN into the preceding convs '
        "first (mmcv's fuse_conv_bn)")
    add_benchmark_arguments(parser, SETTINGS, warmup=3)
    return parser.parse_args()


def run_in_turn(mode, setting, amp, device, args):
    """Rows of every (backbone, format) of one mode, setting and precision,
    stepped in turn round after round."""
    batch, height, width = SETTINGS[setting]
    steps = {}
    for name in args.backbones:
        for layout in args.formats:
            memory_format = FORMATS[layout]
            images = torch.randn(
                batch, 3, height, width,
                device=device).contiguous(memory_format=memory_format)
            model = build(BACKBONES[name], device, memory_format)
            if mode == 'infer' and args.fuse_conv_bn:
                model.eval()  # mmdet's ResNet.train returns None
                model = fuse_conv_bn(model)
            steps[name, layout] = functools.partial(MODES[mode], model, images,
                                                    amp)
            for _ in range(args.warmup):
                steps[name, layout]()
    times = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, step in steps.items():
            times[key] += times_ms(step, device, 1)
    rows = []
    # memory after the timing: measuring it trims the allocator's cache
    for (name, layout), step in steps.items():
        rows.append(
            dict(
                mode=mode,
                setting=setting,
                precision='amp' if amp else 'fp32',
                backbone=name,
                format=layout,
                step_ms=statistics.median(times[name, layout]),
                step_ms_min=min(times[name, layout]),
                step_ms_max=max(times[name, layout]),
                peak_mib=peak_mib(step, device)))
    return rows


def add_ratios(rows):
    """time_ratio / mem_ratio on each backbone's faster-format row."""

    def fastest(backbone, like):
        same = [
            r for r in rows if r['backbone'] == backbone and all(
                r[key] == like[key]
                for key in ('mode', 'setting', 'precision'))
        ]
        return min(same, key=lambda r: r['step_ms']) if same else None

    for row in rows:
        ref = 'ResNet-101 (mmdet)' if '101' in row['backbone'] else \
            'ResNet-50 (mmdet)'
        base = fastest(ref, row)
        if row is fastest(row['backbone'], row) and base is not None:
            row['vs_resnet'] = f"{ref}, {base['format']}"
            row['time_ratio'] = row['step_ms'] / base['step_ms']
            row['mem_ratio'] = row['peak_mib'] / base['peak_mib']


def to_markdown(rows, env, args):
    fused = ('; inference with BN folded into the convs (fuse_conv_bn)'
             if args.fuse_conv_bn else '')
    lines = [
        f'{device_line(env)}; median of {args.repeats} steps after '
        f'{args.warmup} warm-up steps, the models stepped in turn, round '
        f'after round{fused}.', '',
        '| mode | setting | precision | backbone | format | ms (median) | '
        'min-max | peak MiB | time / ResNet | memory / ResNet |',
        '|' + '---|' * 10
    ]
    for row in rows:
        ratio = (f"{row['time_ratio']:.2f} | {row['mem_ratio']:.2f}"
                 if 'time_ratio' in row else '- | -')
        lines.append(f"| {row['mode']} | {row['setting']} | "
                     f"{row['precision']} | {row['backbone']} | "
                     f"{row['format']} | {row['step_ms']:.0f} | "
                     f"{row['step_ms_min']:.0f}-{row['step_ms_max']:.0f} | "
                     f"{row['peak_mib']:.0f} | {ratio} |")
    lines += [
        '', 'Ratios stand on the faster format of each backbone and compare '
        'it with the ResNet of its depth class (RedNet-26/50: ResNet-50, '
        'RedNet-101: ResNet-101) in its faster format, same mode, setting '
        'and precision.'
    ]
    return '\n'.join(lines) + '\n'


def main():
    args = parse_args()
    if args.plot_only:
        return replot(args.plot_only, PLOT)
    device = resolve_device(args.device)
    init_default_scope('mmdet')
    precisions = [False, True] if device.type == 'cuda' else [False]
    env = dict(environment(device), device=str(device))
    rows = []
    for mode in args.modes:
        for setting in args.settings:
            for amp in precisions:
                for row in run_in_turn(mode, setting, amp, device, args):
                    rows.append(row)
                    print(
                        f"{mode:5s} {setting:18s} {row['precision']:4s}"
                        f" {row['backbone']:19s} {row['format']:13s} "
                        f"{row['step_ms']:10.1f} ms "
                        f"{row['peak_mib']:9.0f} MiB",
                        flush=True)
    add_ratios(rows)
    write_results(
        args.out,
        f'backbone_{device.type}',
        dict(
            environment=env,
            repeats=args.repeats,
            warmup=args.warmup,
            rows=rows),
        to_markdown(rows, env, args),
        plot=PLOT)


if __name__ == '__main__':
    main()
