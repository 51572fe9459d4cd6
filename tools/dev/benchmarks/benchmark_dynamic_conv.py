"""Benchmark the dynamic convolutions against static convs of the same shape.

For the 3x3 convs of ResNet-50's stage 3 (256 channels) at ImageNet size
(14x14, batch 32) and detection size (50x76, the stride-16 map of
800x1216, batch 2):

* dense: ``nn.Conv2d`` (the baseline), ``CondConv2d`` (8 experts),
  ``DynamicConv2d`` (4 experts), ``DCDConv2d`` (full residual, and the
  sparse residual with 8 blocks);
* depthwise: ``nn.Conv2d(groups=256)`` (the baseline) and ``DCDConv2d``'s
  depthwise form;

each for inference (eval mode, no grad) and one training step (forward,
mean, backward). Median (and range) of repeated calls after warm-up calls,
the warm-up going round-robin over all layers first (a fresh process runs
slow for a while); the peak memory one call adds
(``tools/dev/benchmarks/harness.py``), the parameter count, and ratios
against the baseline measured in the same run.

Usage:
    python tools/dev/benchmarks/benchmark_dynamic_conv.py    # device auto
    python tools/dev/benchmarks/benchmark_dynamic_conv.py --device cuda \
        --repeats 20
Writes ``<out>/dynamic_conv_<device>.json``, ``.md`` and ``.png``.
"""
import argparse
from functools import partial

import torch
import torch.nn as nn

from mmplug_involution.layers import CondConv2d, DCDConv2d, DynamicConv2d
from harness import (RESNET50_STAGE3_SETTINGS, add_benchmark_arguments,
                     add_ratios, device_line, environment, layer_inference,
                     layer_training_step, measure_all, replot, resolve_device,
                     write_results)

CHANNELS = 256
SETTINGS = RESNET50_STAGE3_SETTINGS
CONV = dict(
    in_channels=CHANNELS,
    out_channels=CHANNELS,
    kernel_size=3,
    padding=1,
    bias=False)
DEPTHWISE = dict(CONV, groups=CHANNELS)
# (layer, baseline layer it is compared with, module)
LAYERS = (
    ('3x3 conv', '3x3 conv', lambda: nn.Conv2d(**CONV)),
    ('CondConv2d, 8 experts', '3x3 conv',
     lambda: CondConv2d(**CONV, num_experts=8)),
    ('DynamicConv2d, 4 experts', '3x3 conv',
     lambda: DynamicConv2d(**CONV, num_experts=4)),
    ('DCDConv2d', '3x3 conv', lambda: DCDConv2d(**CONV)),
    ('DCDConv2d, 8 blocks', '3x3 conv',
     lambda: DCDConv2d(**CONV, num_blocks=8)),
    ('3x3 depthwise conv', '3x3 depthwise conv',
     lambda: nn.Conv2d(**DEPTHWISE)),
    ('DCDConv2d, depthwise', '3x3 depthwise conv',
     lambda: DCDConv2d(**DEPTHWISE)),
)

#: plot_time_and_memory's arguments for these rows
PLOT = dict(groups=('setting', 'task'), series=('layer', ))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_benchmark_arguments(parser, SETTINGS, warmup=3)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.plot_only:
        return replot(args.plot_only, PLOT)
    device = resolve_device(args.device)
    env = dict(environment(device), device=str(device))
    rows = []
    for setting in args.settings:
        batch, height, width = SETTINGS[setting]
        x = torch.randn(batch, CHANNELS, height, width, device=device)
        torch.manual_seed(0)
        modules = {name: build().to(device) for name, _, build in LAYERS}
        for task, step in (('inference', layer_inference),
                           ('training step', layer_training_step)):
            fns = {}
            for name, module in modules.items():
                module.train(task == 'training step')
                fns[name] = partial(step, module, x)
            results = measure_all(fns, device, args.repeats, args.warmup)
            for name, baseline, _ in LAYERS:
                row = dict(
                    setting=setting,
                    task=task,
                    layer=name,
                    baseline=baseline,
                    params=sum(p.numel() for p in modules[name].parameters()),
                    **results[name])
                rows.append(row)
                print(
                    f'{setting:16s} {task:13s} {name:26s} '
                    f'{row["ms"]:9.2f} ms {row["peak_mib"]:8.1f} MiB',
                    flush=True)
    add_ratios(
        rows, lambda r, row: r['layer'] == row['baseline'] and r['setting'] ==
        row['setting'] and r['task'] == row['task'])

    lines = [
        f'{device_line(env)}; {CHANNELS} -> {CHANNELS} channels, 3x3, '
        f'stride 1; median of {args.repeats} calls after {args.warmup} '
        'warm-up rounds over all layers.', '',
        '| setting | task | layer | params | ms (median) | min-max | '
        'peak MiB | time / baseline | memory / baseline |', '|---' * 9 + '|'
    ]
    for row in rows:
        lines.append(f"| {row['setting']} | {row['task']} | {row['layer']} | "
                     f"{row['params'] / 1e3:.1f} k | {row['ms']:.2f} | "
                     f"{row['ms_min']:.2f}-{row['ms_max']:.2f} | "
                     f"{row['peak_mib']:.1f} | "
                     f"{row['time_ratio']:.2f} | "
                     f"{row['memory_ratio']:.2f} |")
    write_results(
        args.out,
        f'dynamic_conv_{device.type}',
        dict(
            environment=env,
            repeats=args.repeats,
            warmup=args.warmup,
            rows=rows),
        '\n'.join(lines) + '\n',
        plot=PLOT)


if __name__ == '__main__':
    main()
