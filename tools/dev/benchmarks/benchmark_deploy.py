"""Benchmark the deployment runtimes (CPU) against PyTorch eager.

Models: mmdet's ResNet-50, RedNet-50 (features of the 4 stages) and the
X-volution ResNet-50 (pixel-shift attention in stage 3) in its deploy form.
Each is exported once with the project's exporter (TorchScript exporter,
dynamic batch and sizes) in both forms: standard ONNX operators, and, for
the models with involutions, custom-op nodes (``--custom-ops``). One
process runs the models in turn, each in:

* ``PyTorch eager``: eval, no grad, the C++ kernels;
* ``ONNX Runtime``: the standard-op file (CPU execution provider);
* ``OpenVINO f32, standard ops``: the standard-op file (models with
  involutions only: what OpenVINO made of them before the native op);
* ``OpenVINO f32`` and ``OpenVINO default``: the custom-op file with the
  package's extension (the standard file for ResNet-50), at the float32
  precision hint and at OpenVINO's default (bfloat16 on CPUs with it).

All with the same number of threads. Median (and range) of repeated calls
after warm-up rounds over all runtimes, the peak memory one call adds
(resident set; ONNX Runtime's on a session without its memory arena, after
all timings: such a session slows the process's later work down), the
time to load the file into each runtime (``compile_s``; OpenVINO's compile),
and ratios: over eager per model, and over ResNet-50 in the same runtime and
setting.

Usage:
    python tools/dev/benchmarks/benchmark_deploy.py
    python tools/dev/benchmarks/benchmark_deploy.py \
        --settings "224x224, batch 1" --models ResNet-50 RedNet-50
    python tools/dev/benchmarks/benchmark_deploy.py --plot-only \
        benchmark_results/deploy_cpu.json
Writes ``<out>/deploy_cpu.json``, ``.md`` and ``.png`` (time and peak
memory per model, setting and runtime).
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
from mmengine.config import Config

from mmplug_involution.apis import build_config_model
from mmplug_involution.deploy import (TensorOutputs, compile_openvino,
                                      custom_op_types, export_onnx)
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
BASELINE = 'ResNet-50'
#: plot_time_and_memory's arguments for these rows
PLOT = dict(groups=('model', 'setting'), series=('runtime', ))


def build(config: dict, deploy: bool) -> TensorOutputs:
    torch.manual_seed(0)
    model = build_config_model(
        Config(dict(model=config, default_scope='mmdet')))
    if deploy:
        switch_xvolution_to_deploy(model)
    return TensorOutputs(model).eval()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_benchmark_arguments(parser, SETTINGS, warmup=2)
    # the 224x224 settings by default; 800x1216 on request
    parser.set_defaults(settings=list(SETTINGS)[:2])
    parser.add_argument(
        '--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    return parser.parse_args()


def export(module, folder: Path, name: str, custom_ops: bool) -> str:
    path = str(folder / f'{name}.onnx')
    export_onnx(
        module,
        torch.randn(1, 3, 224, 224),
        path,
        dynamic=True,
        exporter='torchscript',
        size_divisor=32,
        custom_ops=custom_ops)
    return path


def timed(load):
    """``load()`` and the seconds it took."""
    start = time.perf_counter()
    loaded = load()
    return loaded, time.perf_counter() - start


def onnxruntime_session(path: str, threads: int, arena: bool = True):
    """A call(numpy batch) of ``path`` in ONNX Runtime (CPU)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    session = onnxruntime.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def runtimes(module, folder: Path, threads: int):
    """The standard-op file, and each runtime's name -> (call(numpy batch),
    load seconds)."""
    standard = export(module, folder, 'standard', custom_ops=False)
    custom = export(module, folder, 'custom', custom_ops=True)
    has_involutions = bool(custom_op_types(custom))
    found = {
        'ONNX Runtime': timed(lambda: onnxruntime_session(standard, threads))
    }
    variants = [('OpenVINO f32', custom, 'f32'),
                ('OpenVINO default', custom, None)]
    if has_involutions:
        variants.insert(0, ('OpenVINO f32, standard ops', standard, 'f32'))
    for name, path, precision in variants:
        compiled, seconds = timed(
            lambda path=path, precision=precision: compile_openvino(
                path,
                precision=precision,
                config={'INFERENCE_NUM_THREADS': threads}))
        request = compiled.create_infer_request()
        found[name] = (lambda x, request=request: request.infer({0: x}),
                       seconds)
    return standard, found


def main():
    args = parse_args()
    if args.plot_only:
        return replot(args.plot_only, PLOT)
    if args.device not in ('auto', 'cpu'):
        raise SystemExit('benchmark_deploy measures CPU runtimes only; '
                         f'--device {args.device} is not supported.')
    import onnxruntime
    import openvino
    device = torch.device('cpu')
    threads = torch.get_num_threads()
    env = dict(
        environment(device),
        device='cpu',
        onnxruntime=onnxruntime.__version__,
        openvino=openvino.__version__,
        openvino_default_precision=str(openvino.Core().get_property(
            'CPU', 'INFERENCE_PRECISION_HINT')))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        standard_files = {}
        for name in args.models:
            module = build(*MODELS[name])
            model_folder = Path(folder) / str(len(standard_files))
            model_folder.mkdir()
            standard_files[name], loaded = runtimes(module, model_folder,
                                                    threads)
            for setting in args.settings:
                batch, height, width = SETTINGS[setting]
                x = torch.randn(batch, 3, height, width)
                array = x.numpy()

                def eager(x=x):
                    with torch.no_grad():
                        module(x)

                fns = {'PyTorch eager': eager}
                fns.update({
                    runtime: lambda call=call: call(array)
                    for runtime, (call, _) in loaded.items()
                })
                results = measure_all(fns, device, args.repeats, args.warmup)
                for runtime, result in results.items():
                    load_s = loaded[runtime][1] if runtime in loaded else 0.
                    row = dict(
                        model=name,
                        setting=setting,
                        runtime=runtime,
                        compile_s=load_s,
                        **result)
                    rows.append(row)
                    print(
                        f'{name:42s} {setting:18s} {runtime:27s} '
                        f'{row["ms"]:9.1f} ms {load_s:6.2f} s',
                        flush=True)
            loaded = None  # free the sessions before the next model
        # ONNX Runtime's peak memory without its arena (which keeps the peak
        # allocated between calls), last: a session without the arena leaves
        # the process's allocator slower for everything after it (measured:
        # eager RedNet-50 1.25x, ONNX Runtime 2x)
        for name, path in standard_files.items():
            arena_free = onnxruntime_session(path, threads, arena=False)
            for row in rows:
                if row['model'] == name and row['runtime'] == 'ONNX Runtime':
                    batch, height, width = SETTINGS[row['setting']]
                    array = torch.randn(batch, 3, height, width).numpy()
                    row['peak_mib'] = peak_mib(lambda: arena_free(array),
                                               device)
    add_ratios(
        rows, lambda r, row: r['runtime'] == 'PyTorch eager' and r['model'] ==
        row['model'] and r['setting'] == row['setting'])
    for row in rows:
        base = next(
            (r for r in rows
             if r['model'] == BASELINE and r['setting'] == row['setting']
             and r['runtime'] == row['runtime'].replace(', standard ops', '')),
            None)
        row['time_vs_baseline'] = row['ms'] / base['ms'] if base else None
        row['compile_vs_baseline'] = (
            row['compile_s'] /
            base['compile_s'] if base and base['compile_s'] else None)
    lines = [
        f'{device_line(env)}; onnxruntime {env["onnxruntime"]}, openvino '
        f'{env["openvino"]} (default precision on this CPU: '
        f'{env["openvino_default_precision"]}), {threads} threads each; '
        f'median of {args.repeats} calls after {args.warmup} warm-up rounds '
        f'over all runtimes.', '',
        '| model | setting | runtime | ms (median) | min-max | peak MiB | '
        f'load s | time / eager | memory / eager | time / {BASELINE} | '
        f'load / {BASELINE} |', '|---' * 11 + '|'
    ]

    def ratio(value):
        return '-' if value is None else f'{value:.2f}'

    for row in rows:
        lines.append(f"| {row['model']} | {row['setting']} | {row['runtime']}"
                     f" | {row['ms']:.1f} | {row['ms_min']:.1f}-"
                     f"{row['ms_max']:.1f} | {row['peak_mib']:.1f} | "
                     f"{row['compile_s']:.2f} | {row['time_ratio']:.2f} | "
                     f"{row['memory_ratio']:.2f} | "
                     f"{ratio(row['time_vs_baseline'])} | "
                     f"{ratio(row['compile_vs_baseline'])} |")
    result = dict(
        environment=env, repeats=args.repeats, warmup=args.warmup, rows=rows)
    write_results(
        args.out, 'deploy_cpu', result, '\n'.join(lines) + '\n', plot=PLOT)


if __name__ == '__main__':
    main()
