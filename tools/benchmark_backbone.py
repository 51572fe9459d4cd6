"""Benchmark backbone training steps: RedNet beside mmdet's ResNet.

One training step = forward, loss = sum of the means of every output stage,
backward (no optimizer step). For each backbone and setting: median (and
range) of repeated steps after warm-up steps, and the peak memory one step
adds on top of the model and input (``mmplug_involution.utils.benchmark``).
All models
run in the same process with the same settings: BN in training mode, nothing
frozen, four output stages.

Settings: ImageNet size (224x224, batch 32) and detection size (800x1216,
batch 2); on CUDA in fp32 and with AMP (fp16 autocast) as well.

Usage:
    python tools/benchmark_backbone.py                  # device auto
    python tools/benchmark_backbone.py --device cuda --repeats 10
Writes ``<out>/backbone_<device>.json`` and ``.md``.
"""
import argparse
import functools
import statistics

import torch
from mmengine.registry import MODELS, init_default_scope

import mmplug_involution  # noqa: F401  (registers RedNet)
from mmplug_involution.utils.benchmark import (add_benchmark_arguments,
                                               device_line, environment,
                                               peak_mib, resolve_device,
                                               times_ms, write_results)

BACKBONES = {
    'RedNet-26': dict(type='RedNet', depth=26),
    'RedNet-50': dict(type='RedNet', depth=50),
    'RedNet-101': dict(type='RedNet', depth=101),
    'ResNet-50 (mmdet)': dict(type='mmdet.ResNet', depth=50),
    'ResNet-101 (mmdet)': dict(type='mmdet.ResNet', depth=101),
}
SETTINGS = {
    # name: (batch, height, width)
    '224 px, batch 32': (32, 224, 224),
    '800x1216, batch 2': (2, 800, 1216),
}


def build(cfg, device):
    model = MODELS.build(dict(cfg, norm_eval=False, frozen_stages=-1))
    model.to(device)
    model.train()  # mmdet's ResNet.train returns None, not self
    return model


def train_step(model, images, amp):
    with torch.autocast(images.device.type, enabled=amp):
        outs = model(images)
        loss = sum(o.float().mean() for o in outs)
    loss.backward()
    model.zero_grad(set_to_none=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--backbones', nargs='+', choices=list(BACKBONES),
                        default=list(BACKBONES))
    add_benchmark_arguments(parser, SETTINGS, warmup=4)
    return parser.parse_args()


def main():
    args = parse_args()
    device = resolve_device(args.device)
    init_default_scope('mmdet')
    precisions = [False, True] if device.type == 'cuda' else [False]
    env = dict(environment(device), device=str(device))
    rows = []
    for setting in args.settings:
        batch, height, width = SETTINGS[setting]
        images = torch.randn(batch, 3, height, width, device=device)
        for amp in precisions:
            for name in args.backbones:
                step = functools.partial(train_step,
                                         build(BACKBONES[name], device),
                                         images, amp)
                for _ in range(args.warmup):
                    step()
                # time first: measuring memory trims the allocator's cache
                times = times_ms(step, device, args.repeats)
                peak = peak_mib(step, device)
                ms = statistics.median(times)
                rows.append(
                    dict(setting=setting, precision='amp' if amp else 'fp32',
                         backbone=name, step_ms=ms, step_ms_min=min(times),
                         step_ms_max=max(times), peak_mib=peak))
                print(f'{setting:18s} {rows[-1]["precision"]:4s} {name:19s} '
                      f'{ms:10.1f} ms {peak:9.0f} MiB', flush=True)
                del step
    for row in rows:
        ref = 'ResNet-101 (mmdet)' if '101' in row['backbone'] else \
            'ResNet-50 (mmdet)'
        base = next((r for r in rows if r['backbone'] == ref
                     and r['setting'] == row['setting']
                     and r['precision'] == row['precision']), None)
        row['vs_resnet'] = ref if base else None
        row['time_ratio'] = row['step_ms'] / base['step_ms'] if base else None
        row['mem_ratio'] = row['peak_mib'] / base['peak_mib'] if base else None

    lines = [
        f'{device_line(env)}; median of {args.repeats} steps after '
        f'{args.warmup} warm-up steps.', '',
        '| setting | precision | backbone | step ms (median) | min-max | '
        'peak MiB | time / ResNet | memory / ResNet |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for row in rows:
        ratio = (f"{row['time_ratio']:.2f} | {row['mem_ratio']:.2f}"
                 if row['time_ratio'] is not None else '- | -')
        lines.append(f"| {row['setting']} | {row['precision']} | "
                     f"{row['backbone']} | {row['step_ms']:.0f} | "
                     f"{row['step_ms_min']:.0f}-{row['step_ms_max']:.0f} | "
                     f"{row['peak_mib']:.0f} | {ratio} |")
    lines.append('')
    lines.append('Ratios compare RedNet-26/50 with ResNet-50 and RedNet-101 '
                 'with ResNet-101 in the same setting and precision.')
    write_results(
        args.out, f'backbone_{device.type}',
        dict(environment=env, repeats=args.repeats, warmup=args.warmup,
             rows=rows), '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
