"""Benchmark the involution operator on RedNet-50's involution shapes.

For every involution shape of RedNet-50 at ImageNet (224 px, batch 32) and
detection (800x1216, batch 2) resolution, measure forward and forward+backward
time (median of repeats) and peak memory of each backend of ``involution2d``
(on CPU the C++ kernels in NCHW and channels_last, and the PyTorch path) and
of two baselines run in the same process: an unfold implementation like the
papers' blog notes (materialises N*C*K*K*H_out*W_out) and a depthwise KxK
convolution of the same shape, in both memory formats; ratios are against
the depthwise conv in its faster format.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was
allocated before the call; on CPU, the rise of the process's peak resident set
size (VmHWM, reset through /proc/self/clear_refs) above the resident size
before the call; glibc's ``malloc_trim(0)`` first returns every free page to
the system, so pages the call touches count even when the allocator reuses
freed memory. On CUDA the forward and backward are also compared with the
DRAM roofline: bytes moved (each tensor read or written once) over the
measured device copy bandwidth.

Before timing, every implementation is checked against a float64 reference.

Usage:
    python tools/dev/benchmarks/benchmark_involution.py  # all, device auto
    python tools/dev/benchmarks/benchmark_involution.py --quick  # a subset
    python tools/dev/benchmarks/benchmark_involution.py --device cuda \
        --out results/
Writes ``<out>/involution_<device>.json``, ``.md`` (a table for
docs/benchmarks.md) and ``.png`` (time and peak memory per shape).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mmplug_involution.ops import BACKEND_ENV, involution2d
from harness import (add_plot_only_argument, device_line, environment,
                     median_ms, peak_mib, replot, resolve_device,
                     write_results)

# RedNet-50 involutions: (name, channels, stride, spatial divisor of the op's
# input, number of blocks with this shape)
REDNET50_INVOLUTIONS = [
    ('stem', 32, 1, 2, 1),
    ('stage1', 64, 1, 4, 3),
    ('stage2.0', 128, 2, 4, 1),
    ('stage2', 128, 1, 8, 3),
    ('stage3.0', 256, 2, 8, 1),
    ('stage3', 256, 1, 16, 5),
    ('stage4.0', 512, 2, 16, 1),
    ('stage4', 512, 1, 32, 2),
]
RESOLUTIONS = {
    # name: (batch, height, width, stem kernel size)
    'imagenet': (32, 224, 224, 3),
    'detection': (2, 800, 1216, 7),
}
KERNEL_SIZE = 7
GROUP_CHANNELS = 16


def involution_unfold(x, kernel, kernel_size, stride, padding, dilation=1):
    """Baseline: unfold all K*K taps, multiply, sum.

    Materialises the N*C*K*K*Ho*Wo unfold tensor, as public ports do.
    """
    n, c = x.shape[:2]
    ho, wo = kernel.shape[-2:]
    groups = kernel.shape[1] // kernel_size**2
    cols = F.unfold(x, kernel_size, dilation, padding, stride)
    cols = cols.view(n, groups, c // groups, kernel_size**2, ho, wo)
    out = (cols * kernel.view(n, groups, 1, kernel_size**2, ho, wo)).sum(3)
    return out.view(n, c, ho, wo)


def shapes(resolution, quick):
    batch, height, width, stem_k = RESOLUTIONS[resolution]
    if quick:
        batch = max(1, batch // 4)
    for name, c, s, div, count in REDNET50_INVOLUTIONS:
        if quick and name not in ('stage1', 'stage2.0', 'stage3'):
            continue
        h, w = -(-height // div), -(-width // div)
        yield dict(
            name=name,
            n=batch,
            c=c,
            h=h,
            w=w,
            k=stem_k if name == 'stem' else KERNEL_SIZE,
            s=s,
            count=count)


def shape_label(shape) -> str:
    """``(N,C,H,W) K/s`` of one of :func:`shapes`."""
    return (f"({shape['n']},{shape['c']},{shape['h']},{shape['w']}) "
            f"{shape['k']}/{shape['s']}")


def make_inputs(shape,
                device,
                dtype,
                requires_grad,
                memory_format=torch.contiguous_format):
    n, c, h, w, k, s = (shape[key] for key in 'nchwks')
    ho, wo = -(-h // s), -(-w // s)
    groups = c // GROUP_CHANNELS
    x = torch.randn(n, c, h, w, device=device, dtype=dtype)
    kernel = torch.randn(n, groups * k * k, ho, wo, device=device, dtype=dtype)
    weight = torch.randn(c, 1, k, k, device=device, dtype=dtype)
    x, kernel = (
        t.contiguous(memory_format=memory_format) for t in (x, kernel))
    for t in (x, kernel, weight):
        t.requires_grad_(requires_grad)
    return x, kernel, weight


CHANNELS_LAST = ' channels_last'


def implementations(device):
    """name -> fn(x, kernel, dw_weight, K, s); a name ending in
    ' channels_last' gets channels_last inputs."""

    def ours(backend):

        def run(x, kernel, weight, k, s):
            os.environ[BACKEND_ENV] = backend
            return involution2d(x, kernel, k, s)

        return run

    def depthwise(x, kernel, weight, k, s):
        return F.conv2d(x, weight, None, s, (k - 1) // 2, 1, x.shape[1])

    impls = {}
    if device.type == 'cuda':
        impls['involution2d[cupy]'] = ours('cupy')
    else:
        impls['involution2d[cpp]'] = ours('cpp')
        impls['involution2d[cpp]' + CHANNELS_LAST] = ours('cpp')
    impls['involution2d[pytorch]'] = ours('pytorch')
    impls['unfold'] = lambda x, kernel, weight, k, s: involution_unfold(
        x, kernel, k, s, (k - 1) // 2)
    impls['depthwise-conv'] = depthwise
    impls['depthwise-conv' + CHANNELS_LAST] = depthwise
    return impls


def memory_format_of(name):
    return (torch.channels_last
            if name.endswith(CHANNELS_LAST) else torch.contiguous_format)


def run_once(fn, inputs, shape, backward):
    x, kernel, weight = inputs
    out = fn(x, kernel, weight, shape['k'], shape['s'])
    if backward:
        out.backward(torch.ones_like(out))
        for t in inputs:
            t.grad = None
    return out


def measure(fn, shape, device, dtype, backward, repeats, memory_format):
    inputs = make_inputs(shape, device, dtype, backward, memory_format)
    run_once(fn, inputs, shape, backward)  # warm-up (compiles, thread pools)
    # time first: measuring memory trims the allocator's cache (malloc_trim)
    ms = median_ms(lambda: run_once(fn, inputs, shape, backward), device,
                   repeats)
    return ms, peak_mib(lambda: run_once(fn, inputs, shape, backward), device)


def involution_loop_reference(x, kernel, kernel_size, stride, padding):
    """Float64 reference: pad, then add one strided tap at a time."""
    n, c, h, w = x.shape
    ho, wo = kernel.shape[-2:]
    groups = kernel.shape[1] // kernel_size**2
    xp = F.pad(x.double(),
               (padding, ) * 4).view(n, groups, c // groups, h + 2 * padding,
                                     w + 2 * padding)
    taps = kernel.double().view(n, groups, 1, kernel_size**2, ho, wo)
    out = 0
    for u in range(kernel_size):
        for v in range(kernel_size):
            rows = slice(u, u + (ho - 1) * stride + 1, stride)
            cols = slice(v, v + (wo - 1) * stride + 1, stride)
            out = out + xp[..., rows, cols] * taps[:, :, :,
                                                   u * kernel_size + v]
    return out.view(n, c, ho, wo)


def check_correctness(impls, device):
    """Max error of each implementation relative to a float64 reference."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 19, 17, generator=gen)
    kernel = torch.randn(2, 2 * 49, 10, 9, generator=gen)
    ref = involution_loop_reference(x, kernel, 7, 2, 3)
    errors = {}
    for name, fn in impls.items():
        if name.startswith('depthwise-conv'):
            continue
        layout = memory_format_of(name)
        out = fn(
            x.to(device).contiguous(memory_format=layout),
            kernel.to(device).contiguous(memory_format=layout), None, 7, 2)
        errors[name] = float(
            (out.double().cpu() - ref).abs().max() / ref.abs().max())
    return errors


def copy_bandwidth_gbs(device):
    """Measured device-to-device copy bandwidth (read + write), GB/s."""
    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9


def to_markdown(result):
    env = result['environment']
    lines = [
        f"{device_line(env)}; cupy {env['cupy']}; dtype {result['dtype']}; "
        f"median of {result['repeats']} runs.", ''
    ]
    if 'copy_bandwidth_gbs' in result:
        lines += [
            f"Measured copy bandwidth: {result['copy_bandwidth_gbs']:.0f} "
            'GB/s', ''
        ]
    lines += [
        '| resolution | shape (N,C,H,W) K/s | implementation | fwd ms | '
        'fwd+bwd ms | fwd / depthwise | fwd+bwd / depthwise | fwd peak MiB '
        '| fwd+bwd peak MiB | fwd+bwd time / unfold | fwd+bwd peak / unfold '
        '|', '|' + '---|' * 11
    ]
    for row in result['rows']:
        shape = f"{row['name']} {row['shape']}"
        extra = ''
        if 'fwd_roofline' in row:
            extra = (f" (roofline fwd {row['fwd_roofline']:.0%}, bwd "
                     f"{row['bwd_roofline']:.0%})")
        lines.append(
            f"| {row['resolution']} | {shape} | {row['impl']}{extra} | "
            f"{row['fwd_ms']:.2f} | {row['fwdbwd_ms']:.2f} | "
            f"{row['fwd_vs_depthwise']:.2f} | "
            f"{row['fwdbwd_vs_depthwise']:.2f} | "
            f"{row['fwd_peak_mib']:.0f} | {row['fwdbwd_peak_mib']:.0f} | "
            f"{row['time_vs_unfold']:.2f} | {row['mem_vs_unfold']:.3f} |")
    scope = ('the shapes above' if result['quick'] else 'all involutions')
    lines += [
        '', '| resolution | implementation | RedNet-50 fwd+bwd ms (sum over '
        f'{scope}, times blocks per shape) | / unfold |', '|---|---|---|---|'
    ]
    for total in result['totals']:
        lines.append(f"| {total['resolution']} | {total['impl']} | "
                     f"{total['fwdbwd_ms']:.1f} | {total['vs_unfold']:.2f} |")
    return '\n'.join(lines) + '\n'


#: plot_time_and_memory's arguments: forward + backward of every
#: implementation, per shape
PLOT = dict(
    groups=('resolution', 'name', 'shape'),
    series=('impl', ),
    time_key='fwdbwd_ms',
    memory_key='fwdbwd_peak_mib',
    time_label='forward + backward (ms, median)')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--device',
        default='auto',
        help='cpu, cuda, cuda:N or auto (cuda if available)')
    parser.add_argument(
        '--dtype',
        default='float32',
        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument(
        '--resolutions',
        nargs='+',
        choices=list(RESOLUTIONS),
        default=list(RESOLUTIONS))
    parser.add_argument(
        '--repeats',
        type=int,
        default=None,
        help='timed runs per measurement (default 5, quick 3)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='three shapes at a quarter of the batch, ImageNet '
        'resolution only, 3 repeats: the operator demo')
    parser.add_argument(
        '--out',
        default='benchmark_results',
        help='directory for the JSON and Markdown results')
    add_plot_only_argument(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.plot_only:
        return replot(args.plot_only, PLOT)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    repeats = args.repeats or (3 if args.quick else 5)
    resolutions = ['imagenet'] if args.quick else args.resolutions
    impls = implementations(device)
    env = environment(device)
    env['device'] = str(device)

    errors = check_correctness(impls, device)
    print('Correctness (max error relative to a float64 reference):')
    for name, err in errors.items():
        print(f'  {name:28s} {err:.2e}')
    if any(err > 1e-4 for err in errors.values()):
        sys.exit('an implementation disagrees with the reference; not timing')

    result = dict(
        environment=env,
        dtype=args.dtype,
        repeats=repeats,
        quick=args.quick,
        correctness=errors,
        rows=[],
        totals=[])
    bandwidth = None
    if device.type == 'cuda':
        bandwidth = result['copy_bandwidth_gbs'] = copy_bandwidth_gbs(device)
    elem = torch.empty((), dtype=dtype).element_size()
    for resolution in resolutions:
        totals = {}
        for shape in shapes(resolution, args.quick):
            rows = []
            for name, fn in impls.items():
                layout = memory_format_of(name)
                fwd_ms, fwd_peak = measure(fn, shape, device, dtype, False,
                                           repeats, layout)
                fb_ms, fb_peak = measure(fn, shape, device, dtype, True,
                                         repeats, layout)
                row = dict(
                    resolution=resolution,
                    impl=name,
                    **shape,
                    shape=shape_label(shape),
                    fwd_ms=fwd_ms,
                    fwdbwd_ms=fb_ms,
                    fwd_peak_mib=fwd_peak,
                    fwdbwd_peak_mib=fb_peak)
                if bandwidth and name.startswith('involution2d'):
                    x_b, k_b, y_b = _bytes(shape, elem)
                    # forward reads x and the kernel and writes y, each once
                    row['fwd_roofline'] = (x_b + k_b + y_b) / (
                        fwd_ms * 1e-3) / 1e9 / bandwidth
                    # backward reads dy, x, kernel and writes dx, dkernel
                    row['bwd_roofline'] = (y_b + 2 * x_b + 2 * k_b) / (
                        max(fb_ms - fwd_ms, 1e-6) * 1e-3) / 1e9 / bandwidth
                rows.append(row)
                totals[name] = totals.get(name, 0.0) + fb_ms * shape['count']
                print(
                    f"{resolution:9s} {shape['name']:9s} {name:22s} fwd "
                    f'{fwd_ms:9.2f} ms  fwd+bwd {fb_ms:9.2f} ms  peak '
                    f'{fwd_peak:8.1f} / {fb_peak:8.1f} MiB',
                    flush=True)
            unfold = next(r for r in rows if r['impl'] == 'unfold')
            # the depthwise conv in its faster memory format
            depthwise = [r for r in rows if r['impl'].startswith('depthwise')]
            best_fwd = min(r['fwd_ms'] for r in depthwise)
            best_fwdbwd = min(r['fwdbwd_ms'] for r in depthwise)
            for row in rows:
                row['fwd_vs_depthwise'] = row['fwd_ms'] / best_fwd
                row['fwdbwd_vs_depthwise'] = row['fwdbwd_ms'] / best_fwdbwd
                row['time_vs_unfold'] = row['fwdbwd_ms'] / unfold['fwdbwd_ms']
                row['mem_vs_unfold'] = (
                    row['fwdbwd_peak_mib'] /
                    max(unfold['fwdbwd_peak_mib'], 1e-6))
            result['rows'] += rows
        for name, total in totals.items():
            result['totals'].append(
                dict(
                    resolution=resolution,
                    impl=name,
                    fwdbwd_ms=total,
                    vs_unfold=total / totals['unfold']))
    os.environ.pop(BACKEND_ENV, None)

    stem = f"involution_{device.type}{'_quick' if args.quick else ''}"
    write_results(args.out, stem, result, to_markdown(result), plot=PLOT)


def _bytes(shape, elem):
    """Bytes of x, of the kernel and of y for one shape."""
    n, c, h, w, k, s = (shape[key] for key in 'nchwks')
    ho, wo = -(-h // s), -(-w // s)
    return (n * c * h * w * elem,
            n * (c // GROUP_CHANNELS) * k * k * ho * wo * elem,
            n * c * ho * wo * elem)


if __name__ == '__main__':
    main()
