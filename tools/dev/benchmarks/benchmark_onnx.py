"""Benchmark ONNX Runtime (CPU) against PyTorch eager on the same models.

Models: RedNet-50 (features of the 4 stages), the X-volution ResNet-50
(pixel-shift attention in stage 3) in its deploy form, and mmdet's
ResNet-50, the convolution network both replace. Each is exported once
(TorchScript exporter, dynamic batch and sizes; the dynamo exporter gives the
same translation of the involution op) and run at each setting in PyTorch
(eval, no grad, the C++ kernels) and in ONNX Runtime with the same number of
threads. Median (and range) of repeated calls after warm-up rounds over
both runtimes, and the peak memory one call adds (resident set; for ONNX
Runtime measured on a second session without its memory arena, which would
otherwise keep the peak allocated between calls); ratios ONNX Runtime /
PyTorch per model and setting.

Usage:
    python tools/dev/benchmarks/benchmark_onnx.py
    python tools/dev/benchmarks/benchmark_onnx.py \
        --settings "224x224, batch 1" --repeats 9
    python tools/dev/benchmarks/benchmark_onnx.py --plot-only \
        benchmark_results/onnx_cpu.json
Writes ``<out>/onnx_cpu.json``, ``.md`` and ``.png`` (time and peak memory of
both runtimes per model and setting).
"""
import argparse
import tempfile
from pathlib import Path

import torch
from mmengine.config import Config

from mmplug_involution.apis import build_config_model
from mmplug_involution.deploy import TensorOutputs, export_onnx
from mmplug_involution.layers import switch_xvolution_to_deploy
from harness import (add_benchmark_arguments, add_ratios, device_line,
                     environment, measure_all, peak_mib, replot, write_results)

SETTINGS = {
    '224x224, batch 1': (1, 224, 224),
    '224x224, batch 8': (8, 224, 224),
    '800x1216, batch 1': (1, 800, 1216),
}
MODELS = {
    'ResNet-50': (dict(type='ResNet', depth=50), False),
    'RedNet-50': (dict(type='RedNet', depth=50), False),
    'X-volution ResNet-50 (pssa), deploy form': (dict(
        type='XVolutionResNet',
        depth=50,
        xvolution=dict(type='XVolution', attention='pssa'),
        stage_with_xvolution=(False, False, True, False)), True),
}


def build(config: dict, deploy: bool) -> TensorOutputs:
    torch.manual_seed(0)
    model = build_config_model(
        Config(dict(model=config, default_scope='mmdet')))
    if deploy:
        switch_xvolution_to_deploy(model)
    return TensorOutputs(model)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_benchmark_arguments(parser, SETTINGS, warmup=2)
    parser.add_argument(
        '--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    return parser.parse_args()


#: plot_time_and_memory's arguments for these rows
PLOT = dict(groups=('model', 'setting'), series=('runtime', ))


def main():
    args = parse_args()
    if args.plot_only:
        return replot(args.plot_only, PLOT)
    if args.device not in ('auto', 'cpu'):
        raise SystemExit('benchmark_onnx measures the CPU execution provider '
                         f'only; --device {args.device} is not supported.')
    import onnxruntime
    device = torch.device('cpu')
    threads = torch.get_num_threads()
    env = dict(
        environment(device), device='cpu', onnxruntime=onnxruntime.__version__)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            module = build(*MODELS[name])
            path = str(Path(folder) / 'model.onnx')
            export_onnx(
                module,
                torch.randn(1, 3, 224, 224),
                path,
                dynamic=True,
                exporter='torchscript',
                size_divisor=32)
            session = onnxruntime.InferenceSession(
                path, options, providers=['CPUExecutionProvider'])
            options.enable_cpu_mem_arena = False
            arena_free = onnxruntime.InferenceSession(
                path, options, providers=['CPUExecutionProvider'])
            options.enable_cpu_mem_arena = True
            for setting in args.settings:
                batch, height, width = SETTINGS[setting]
                x = torch.randn(batch, 3, height, width)
                feed = {session.get_inputs()[0].name: x.numpy()}

                def eager(x=x):
                    with torch.no_grad():
                        module(x)

                fns = {
                    'PyTorch eager': eager,
                    'ONNX Runtime': lambda feed=feed: session.run(None, feed)
                }
                results = measure_all(fns, device, args.repeats, args.warmup)
                results['ONNX Runtime']['peak_mib'] = peak_mib(
                    lambda: arena_free.run(None, feed), device)
                for runtime, result in results.items():
                    row = dict(
                        model=name, setting=setting, runtime=runtime, **result)
                    rows.append(row)
                    print(
                        f'{name:42s} {setting:18s} {runtime:14s} '
                        f'{row["ms"]:9.1f} ms {row["peak_mib"]:8.1f} MiB',
                        flush=True)
            session = arena_free = None  # free both before the next model
    add_ratios(
        rows, lambda r, row: r['runtime'] == 'PyTorch eager' and r['model'] ==
        row['model'] and r['setting'] == row['setting'])
    lines = [
        f'{device_line(env)}; onnxruntime {env["onnxruntime"]} '
        f'({threads} intra-op threads); median of {args.repeats} calls after '
        f'{args.warmup} warm-up rounds over both runtimes.', '',
        '| model | setting | runtime | ms (median) | min-max | peak MiB | '
        'time / eager | memory / eager |', '|---' * 8 + '|'
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {row['setting']} | {row['runtime']}"
                     f" | {row['ms']:.1f} | {row['ms_min']:.1f}-"
                     f"{row['ms_max']:.1f} | {row['peak_mib']:.1f} | "
                     f"{row['time_ratio']:.2f} | {row['memory_ratio']:.2f} |")
    result = dict(
        environment=env, repeats=args.repeats, warmup=args.warmup, rows=rows)
    write_results(
        args.out, 'onnx_cpu', result, '\n'.join(lines) + '\n', plot=PLOT)


if __name__ == '__main__':
    main()
