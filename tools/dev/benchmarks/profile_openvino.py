"""Where OpenVINO spends a model's time: shares by kind of node.

Exports each model as ``benchmark_deploy.py`` does (custom-op nodes for the
involutions), compiles it with the package's extension at each precision
(``f32`` and OpenVINO's default) and, after warm-up calls, sums OpenVINO's
per-node execution times (``PERF_COUNT``) over ``--calls`` calls by node
type: ``Convolution``, ``Reference`` (the involution extension's ops),
``Reorder`` (the layout and precision conversions OpenVINO inserts, most of
them around the extension's ops, which take plain float32 tensors), and the
rest.

Usage:
    python tools/dev/benchmarks/profile_openvino.py \
        --models RedNet-50 ResNet-50 --settings "224x224, batch 1"
Writes ``<out>/profile_openvino.json`` and ``.md``.
"""
import argparse
import collections
import tempfile
from pathlib import Path

import torch
from benchmark_deploy import MODELS, SETTINGS, build, export

from mmplug_involution.deploy import compile_openvino
from harness import device_line, environment, write_results

PRECISIONS = {'f32': 'f32', 'default': None}
SHOWN = ('Convolution', 'Reference', 'Reorder')


def node_times(compiled, array, warmup: int, calls: int) -> dict:
    """Mean ms per call of each node type."""
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer({0: array})
    totals = collections.Counter()
    for _ in range(calls):
        request.infer({0: array})
        for node in request.profiling_info:
            totals[node.node_type] += node.real_time.total_seconds() * 1e3
    return {kind: ms / calls for kind, ms in totals.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--models',
        nargs='+',
        choices=list(MODELS),
        default=['ResNet-50', 'RedNet-50'])
    parser.add_argument(
        '--settings',
        nargs='+',
        choices=list(SETTINGS),
        default=list(SETTINGS)[:2])
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--calls', type=int, default=5)
    parser.add_argument('--out', default='benchmark_results')
    args = parser.parse_args()
    import openvino
    threads = torch.get_num_threads()
    env = dict(
        environment(torch.device('cpu')),
        device='cpu',
        openvino=openvino.__version__)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            path = export(build(*MODELS[name]), Path(folder), name, True)
            for precision, hint in PRECISIONS.items():
                for setting in args.settings:
                    # compiled anew per input size: the node times of a
                    # second size in one compiled model came out short
                    compiled = compile_openvino(
                        path,
                        precision=hint,
                        config={
                            'INFERENCE_NUM_THREADS': threads,
                            'PERF_COUNT': True
                        })
                    batch, height, width = SETTINGS[setting]
                    array = torch.randn(batch, 3, height, width).numpy()
                    times = node_times(compiled, array, args.warmup,
                                       args.calls)
                    rows.append(
                        dict(
                            model=name,
                            precision=precision,
                            setting=setting,
                            total_ms=sum(times.values()),
                            node_ms=times))
                    print(
                        name,
                        precision,
                        setting,
                        f'{rows[-1]["total_ms"]:.1f} ms',
                        flush=True)
    lines = [
        f'{device_line(env)}; openvino {env["openvino"]}, {threads} threads; '
        f'mean of {args.calls} calls after {args.warmup}; ms (share).', '',
        '| model | precision | setting | nodes, ms | ' + ' | '.join(SHOWN) +
        ' | other |', '|---' * (5 + len(SHOWN)) + '|'
    ]
    for row in rows:
        total, times = row['total_ms'], row['node_ms']
        other = total - sum(times.get(kind, 0.) for kind in SHOWN)
        cells = [
            f'{times.get(kind, 0.):.1f} ({times.get(kind, 0.) / total:.0%})'
            for kind in SHOWN
        ] + [f'{other:.1f} ({other / total:.0%})']
        lines.append(f"| {row['model']} | {row['precision']} | "
                     f"{row['setting']} | {total:.1f} | " + ' | '.join(cells) +
                     ' |')
    write_results(
        args.out, 'profile_openvino',
        dict(environment=env, rows=rows, calls=args.calls, warmup=args.warmup),
        '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
