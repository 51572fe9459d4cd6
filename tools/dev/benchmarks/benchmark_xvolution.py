"""Benchmark X-volution: training form, deploy form, a static conv.

For the shapes of ResNet-50's stage 3 (where X-volution goes: 256 channels,
3x3) at ImageNet size (14x14, batch 32) and detection size (50x76, the
stride-16 map of 800x1216, batch 2):

* inference (eval mode, no grad) of a 3x3 conv + BN, of X-volution in the
  training form (conv + BN beside attention + BN) for each attention, and
  of the deploy form (one fused dynamic convolution) for the local ones;
* one training step (forward, mean, backward) of the conv and of each
  training form.

Median (and range) of repeated calls after warm-up rounds over all layers
(``harness.measure_all``: a fresh process runs
slow for a while), and the peak memory one call adds; ratios against the
conv in the same run.

Usage:
    python tools/dev/benchmarks/benchmark_xvolution.py       # device auto
    python tools/dev/benchmarks/benchmark_xvolution.py --device cuda \
        --repeats 20
Writes ``<out>/xvolution_<device>.json``, ``.md`` and ``.png``.
"""
import argparse
import copy
from functools import partial

import torch
import torch.nn as nn

from mmplug_involution.layers import XVolution
from harness import (RESNET50_STAGE3_SETTINGS, add_benchmark_arguments,
                     add_ratios, device_line, environment, layer_inference,
                     layer_training_step, measure_all, replot, resolve_device,
                     write_results)

CHANNELS = 256
SETTINGS = RESNET50_STAGE3_SETTINGS
ATTENTIONS = ('pssa', 'involution', 'sa')


def layers(device):
    """(name, form, module) of everything measured, in eval mode."""
    conv = nn.Sequential(
        nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, bias=False),
        nn.BatchNorm2d(CHANNELS))
    yield '3x3 conv + BN', 'static', conv.to(device).eval()
    for attention in ATTENTIONS:
        layer = XVolution(CHANNELS, CHANNELS, attention=attention)
        layer = layer.to(device).eval()
        yield f'X-volution ({attention})', 'training form', layer
        if attention != 'sa':
            deployed = copy.deepcopy(layer)
            deployed.switch_to_deploy()
            yield f'X-volution ({attention})', 'deploy form', deployed


#: plot_time_and_memory's arguments for these rows
PLOT = dict(groups=('setting', 'task'), series=('layer', 'form'))


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
        measured = list(layers(device))
        for task, step in (('inference', layer_inference),
                           ('training step', layer_training_step)):
            chosen = [(name, form, module) for name, form, module in measured
                      if task == 'inference' or form != 'deploy form']
            fns = {}
            for name, form, module in chosen:
                module.train(task == 'training step')
                fns[f'{name}, {form}'] = partial(step, module, x)
            results = measure_all(fns, device, args.repeats, args.warmup)
            for name, form, _ in chosen:
                row = dict(
                    setting=setting,
                    task=task,
                    layer=name,
                    form=form,
                    **results[f'{name}, {form}'])
                rows.append(row)
                print(
                    f'{setting:16s} {task:13s} {name:24s} {form:13s} '
                    f'{row["ms"]:9.2f} ms {row["peak_mib"]:8.1f} MiB',
                    flush=True)
    add_ratios(
        rows, lambda r, row: r['form'] == 'static' and r['setting'] == row[
            'setting'] and r['task'] == row['task'])

    lines = [
        f'{device_line(env)}; {CHANNELS} channels, 3x3; median of '
        f'{args.repeats} calls after {args.warmup} warm-up rounds over all '
        'layers.', '',
        '| setting | task | layer | form | ms (median) | min-max | peak MiB '
        '| time / conv | memory / conv |', '|---' * 9 + '|'
    ]
    for row in rows:
        lines.append(f"| {row['setting']} | {row['task']} | {row['layer']} | "
                     f"{row['form']} | {row['ms']:.2f} | "
                     f"{row['ms_min']:.2f}-{row['ms_max']:.2f} | "
                     f"{row['peak_mib']:.1f} | {row['time_ratio']:.2f} | "
                     f"{row['memory_ratio']:.2f} |")
    write_results(
        args.out,
        f'xvolution_{device.type}',
        dict(
            environment=env,
            repeats=args.repeats,
            warmup=args.warmup,
            rows=rows),
        '\n'.join(lines) + '\n',
        plot=PLOT)


if __name__ == '__main__':
    main()
