"""Where a backbone's step spends its time: shares by kind of work.

Runs ``--steps`` profiled steps (``benchmark_backbone.py``'s training step
or inference, after ``--warmup`` steps) of each backbone asked for under
``torch.profiler`` and sums the ops' self CPU (or CUDA) time into kinds of
work: convolutions by the role of their module (found by the weight and
input shapes each conv module sees, so the backward ops are counted too),
the involution ops, BN, ReLU, adds, pooling, layout copies, the rest.
Each backbone is profiled in a fresh process.

Usage:
    python tools/dev/benchmarks/profile_backbone.py --backbones RedNet-50 \
        "ResNet-50 (mmdet)" --mode train --setting "224 px, batch 8"
Writes ``<out>/profile_<mode>_<device>.json`` and ``.md``.
"""
import argparse
import collections
import multiprocessing

import torch
from benchmark_backbone import BACKBONES, FORMATS, MODES, SETTINGS, build
from mmengine.registry import init_default_scope
from torch.profiler import ProfilerActivity, profile

from harness import device_line, environment, resolve_device, write_results

#: op name (or its start) -> kind of work, for the ops that are not convs
OP_KINDS = [
    ('mmplug_involution', 'involution ops (span conv + aggregation)'),
    ('aten::native_batch_norm', 'BN'),
    ('aten::threshold_backward', 'ReLU'),
    ('aten::clamp_min', 'ReLU'),
    ('aten::relu', 'ReLU'),
    ('aten::add', 'adds (residual, gradient sums)'),
    ('aten::max_pool2d', 'pooling'),
    ('aten::avg_pool2d', 'pooling'),
    ('aten::copy_', 'layout and dtype copies'),
]
CONV_OPS = ('aten::mkldnn_convolution', 'aten::convolution_backward',
            'aten::_convolution', 'aten::cudnn_convolution',
            'aten::thnn_conv2d')


def conv_role(name: str, kernel_size) -> str:
    """The role of a conv module by its name in the backbone."""
    if name.startswith('stem') or name == 'conv1':  # RedNet's, ResNet's
        return 'stem convs'
    if name.endswith('conv2.conv1.conv'):
        return 'involution kernel generator: reduce conv'
    if tuple(kernel_size) == (1, 1):
        return 'block 1x1 convs (conv1, conv3, downsample)'
    return f'block {kernel_size[0]}x{kernel_size[1]} convs'


def conv_roles(model, images):
    """(weight shape, input shape) -> role, from one forward's hooks."""
    roles, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):

            def hook(module, args, name=name):
                key = (tuple(module.weight.shape), tuple(args[0].shape))
                roles[key] = conv_role(name, module.kernel_size)

            handles.append(module.register_forward_pre_hook(hook))
    model.eval()  # mmdet's ResNet.train returns None, not the model
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return roles


def kind_of(event, roles) -> str:
    name = event.name
    if name in CONV_OPS:
        shapes = [tuple(s) for s in event.input_shapes]
        # forward: (input, weight, ...); backward: (grad_out, input, weight)
        for input_shape, weight_shape in ((shapes[0:1], shapes[1:2]),
                                          (shapes[1:2], shapes[2:3])):
            if input_shape and weight_shape:
                role = roles.get((weight_shape[0], input_shape[0]))
                if role is not None:
                    return role
        return 'other convs'
    for start, kind in OP_KINDS:
        if name.startswith(start):
            return kind
    return 'other'


def profile_backbone(name, args, device):
    init_default_scope('mmdet')
    batch, height, width = SETTINGS[args.setting]
    memory_format = FORMATS[args.format]
    images = torch.randn(
        batch, 3, height, width,
        device=device).contiguous(memory_format=memory_format)
    model = build(BACKBONES[name], device, memory_format)
    roles = conv_roles(model, images)
    step = MODES[args.mode]
    for _ in range(args.warmup):
        step(model, images, False)
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(args.steps):
            step(model, images, False)
    totals = collections.Counter()
    for event in prof.events():
        time_us = (
            event.self_device_time_total
            if device.type == 'cuda' else event.self_cpu_time_total)
        totals[kind_of(event, roles)] += time_us / 1e3 / args.steps
    step_ms = sum(totals.values())
    return [
        dict(
            backbone=name,
            kind=kind,
            ms=ms,
            share=ms / step_ms,
        ) for kind, ms in totals.most_common()
    ]


def to_markdown(result):
    args = result['arguments']
    lines = [
        f"{device_line(result['environment'])}; {args['mode']}, "
        f"{args['setting']}, {args['format']}; self time per step, mean "
        f"of {args['steps']} profiled steps (the profiler slows the step).",
        '', '| backbone | kind of work | ms per step | share |',
        '|---|---|---|---|'
    ]
    for row in result['rows']:
        lines.append(f"| {row['backbone']} | {row['kind']} | "
                     f"{row['ms']:.1f} | {100 * row['share']:.1f}% |")
    return '\n'.join(lines) + '\n'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--backbones',
        nargs='+',
        choices=list(BACKBONES),
        default=['RedNet-50', 'ResNet-50 (mmdet)'])
    parser.add_argument('--mode', choices=list(MODES), default='train')
    parser.add_argument(
        '--setting', choices=list(SETTINGS), default='224 px, batch 8')
    parser.add_argument(
        '--format', choices=list(FORMATS), default='channels_last')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--out', default='benchmark_results')
    return parser.parse_args()


def main():
    args = parse_args()
    device = resolve_device(args.device)
    rows = []
    # each backbone in a fresh process: the second model profiled in one
    # process measured up to 1.6x slower than in its own
    context = multiprocessing.get_context('spawn')
    for name in args.backbones:
        with context.Pool(1) as pool:
            rows += pool.apply(profile_backbone, (name, args, device))
    result = dict(
        environment=dict(environment(device), device=str(device)),
        arguments=vars(args),
        rows=rows)
    write_results(args.out, f'profile_{args.mode}_{device.type}', result,
                  to_markdown(result))


if __name__ == '__main__':
    main()
