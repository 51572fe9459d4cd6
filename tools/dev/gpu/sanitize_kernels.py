"""Run every involution CUDA kernel once, small, for compute-sanitizer.

``tools/dev/gpu/run.sh`` runs this script under ``compute-sanitizer --tool
memcheck`` and ``--tool racecheck`` (and may run it bare)::

    compute-sanitizer --tool memcheck python tools/dev/gpu/sanitize_kernels.py

It launches each kernel of ``mmplug_involution/ops/csrc/cupy/
involution_kernels.cu`` (``involution_forward``, ``involution_grad_input``,
``involution_grad_kernel``) once, through the cupy backend, plus the
backend's ``generated_forward`` path (cuDNN 1x1 conv, then the forward
kernel), for every case of:

* shapes: input (N, C, H, W) = (2, 32, 13, 11), G = 2 groups of 16 channels,
  kernel (N, G*K*K, H_out, W_out), padding d*(K-1)//2; (K, stride,
  dilation) in (3, 1, 1), (3, 2, 1), (7, 1, 1), (7, 2, 1), (3, 1, 2);
  ``generated_forward`` reduces from R = 8 channels;
* dtypes: float32, float16, bfloat16;
* index types: ``int`` (what shapes this small get) and ``long long``
  (forced by lowering the backend's ``MAX_INT32_NUMEL`` threshold; the
  variant actually launched is recorded and checked).

Outputs the backend lets us pass (``out=``, ``grad_input=``,
``grad_kernel=``) are filled with NaN before the launch, so an element the
kernel fails to write shows up. Each result is compared with a float64
reference on the CPU (the test suite's ``mmplug_involution/ops/reference.py``,
autograd for the gradients) from the same dtype-rounded inputs; the error is
the max absolute difference relative to max |reference|, and must be at most
1e-5 for float32 and 1e-2 for float16/bfloat16 (the kernels accumulate in
float32). TF32 is turned off so the float32 cuDNN conv of
``generated_forward`` is exact enough.

The backend module is loaded standalone from its file (it imports only
torch and its sibling ``unfused.py``; CuPy is imported when a kernel is
first launched), not through
``import mmplug_involution``, which would import mmdet and mmseg and make
the sanitized process heavier.

Prints one line per case (kernel, dtype, index type, shape, error,
PASS/FAIL) and a summary; exit status 0 when every case passes, 1 when one
fails or when there is no CUDA device or no CuPy.
"""
import argparse
import importlib
import importlib.util
import math
import sys
import traceback
import types
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parents[3]
BACKEND_PATH = ROOT / 'mmplug_involution' / 'ops' / 'backends' / 'cupy.py'
STANDALONE_PACKAGE = 'mmplug_involution_standalone_backends'
REFERENCE_PATH = ROOT / 'mmplug_involution' / 'ops' / 'reference.py'


def load_module(name: str, path: Path):
    """The Python file at ``path`` as a module (imports nothing else)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = load_module('involution_reference', REFERENCE_PATH)
BATCH, CHANNELS, GROUPS, HEIGHT, WIDTH = 2, 32, 2, 13, 11
REDUCED_CHANNELS = 8
# (kernel_size, stride, dilation); padding = dilation * (K - 1) // 2
WINDOWS = ((3, 1, 1), (3, 2, 1), (7, 1, 1), (7, 2, 1), (3, 1, 2))
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_TYPES = ('int', 'long long')
TOLERANCES = {
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}
KERNELS = ('involution_forward', 'involution_grad_input',
           'involution_grad_kernel', 'generated_forward')
UNAVAILABLE = 'sanitize_kernels.py needs a CUDA device and CuPy'


class Case(NamedTuple):
    """One shape: window arguments and the derived sizes."""
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    out_height: int
    out_width: int

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        return (BATCH, CHANNELS, HEIGHT, WIDTH)

    @property
    def kernel_shape(self) -> Tuple[int, int, int, int]:
        return (BATCH, GROUPS * self.kernel_size**2, self.out_height,
                self.out_width)

    @property
    def output_shape(self) -> Tuple[int, int, int, int]:
        return (BATCH, CHANNELS, self.out_height, self.out_width)

    def describe(self) -> str:
        n, c, h, w = self.input_shape
        return (f'x={n}x{c}x{h}x{w} G={GROUPS} K={self.kernel_size} '
                f's={self.stride} p={self.padding} d={self.dilation} '
                f'out={self.out_height}x{self.out_width}')


def output_size(size: int, kernel_size: int, stride: int, padding: int,
                dilation: int) -> int:
    """floor((size + 2p - d(K-1) - 1) / s) + 1, as for a convolution."""
    return (size + 2 * padding - dilation *
            (kernel_size - 1) - 1) // stride + 1


def make_case(kernel_size: int, stride: int, dilation: int) -> Case:
    """The :class:`Case` of a window, with the default padding."""
    padding = dilation * (kernel_size - 1) // 2
    return Case(kernel_size, stride, padding, dilation,
                output_size(HEIGHT, kernel_size, stride, padding, dilation),
                output_size(WIDTH, kernel_size, stride, padding, dilation))


def cases() -> List[Case]:
    """Every shape the script runs."""
    return [make_case(*window) for window in WINDOWS]


def reference_forward(input: Tensor, kernel: Tensor, kernel_size: int,
                      stride: int, padding: int, dilation: int) -> Tensor:
    """The float64 involution the test suite judges every backend with
    (``mmplug_involution/ops/reference.py``: explicit padding and index
    gathers, independent of every backend)."""
    return REFERENCE.involution_reference(input, kernel, kernel_size, stride,
                                          padding, dilation)


def reference_backward(grad_output: Tensor, input: Tensor, kernel: Tensor,
                       kernel_size: int, stride: int, padding: int,
                       dilation: int) -> Tuple[Tensor, Tensor]:
    """``(grad_input, grad_kernel)`` of :func:`reference_forward`, by
    autograd."""
    input = input.detach().requires_grad_()
    kernel = kernel.detach().requires_grad_()
    out = reference_forward(input, kernel, kernel_size, stride, padding,
                            dilation)
    return torch.autograd.grad(out, (input, kernel), grad_output)


def relative_error(result: Tensor, reference: Tensor) -> float:
    """max |result - reference| / max |reference| (float64, on the CPU);
    ``inf`` if ``result`` holds a NaN or infinity (e.g. an unwritten
    NaN-poisoned element) or has another shape."""
    result = result.detach().to('cpu', torch.float64)
    if result.shape != reference.shape or not torch.isfinite(result).all():
        return math.inf
    scale = max(reference.abs().max().item(), 1e-30)
    return (result - reference).abs().max().item() / scale


def load_backend():
    """``mmplug_involution/ops/backends/cupy.py`` as a module of a stand-in
    package of its folder, so that it finds its sibling ``unfused.py``
    without the package's ``__init__`` files running."""
    package = types.ModuleType(STANDALONE_PACKAGE)
    package.__path__ = [str(BACKEND_PATH.parent)]
    sys.modules.setdefault(STANDALONE_PACKAGE, package)
    return importlib.import_module(f'{STANDALONE_PACKAGE}.cupy')


def unavailable_reason(backend) -> Optional[str]:
    """``None`` when the kernels can run here, else why not."""
    if not torch.cuda.is_available():
        return 'torch sees no CUDA device (torch.cuda.is_available() is ' \
               f'False; torch {torch.__version__}, CUDA ' \
               f'{torch.version.cuda})'
    return backend.cupy_import_error()


class LaunchRecorder:
    """Wraps the backend's ``_get_function`` to record the index type of
    each launch, so a case can check which variant really ran."""

    def __init__(self, backend):
        self.backend = backend
        self.original = backend._get_function
        self.index_types: List[str] = []
        backend._get_function = self._get_function

    def _get_function(self, name, dtype, index_type, device_index):
        self.index_types.append(index_type)
        return self.original(name, dtype, index_type, device_index)

    def take(self) -> List[str]:
        taken, self.index_types = self.index_types, []
        return taken


def random_inputs(case: Case, dtype: torch.dtype,
                  generator: torch.Generator) -> Dict[str, Tensor]:
    """float64 CPU inputs of ``case``, already rounded to ``dtype``."""

    def rand(*shape):
        return torch.randn(
            *shape, generator=generator,
            dtype=torch.float64).to(dtype).to(torch.float64)

    taps = GROUPS * case.kernel_size**2
    return dict(
        input=rand(*case.input_shape),
        kernel=rand(*case.kernel_shape),
        grad_output=rand(*case.output_shape),
        reduced=rand(BATCH, REDUCED_CHANNELS, case.out_height, case.out_width),
        weight=rand(taps, REDUCED_CHANNELS, 1, 1) / REDUCED_CHANNELS**0.5,
        bias=rand(taps) * 0.1)


def run_case(
        backend,
        recorder: LaunchRecorder,
        case: Case,
        dtype: torch.dtype,
        index_type: str,
        inputs: Dict[str, Tensor],
        device: Optional[torch.device] = None) -> Dict[str, Tuple[float, str]]:
    """Launch the four paths on ``case``; ``{kernel: (error, index type
    launched)}``. ``device``: the current CUDA device unless given."""
    if device is None:
        device = torch.device('cuda', torch.cuda.current_device())

    def synchronize():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    window = (case.kernel_size, case.stride, case.padding, case.dilation)
    gpu = {k: v.to(device, dtype) for k, v in inputs.items()}
    x64, w64, dy64 = (inputs[k] for k in ('input', 'kernel', 'grad_output'))
    ref_out = reference_forward(x64, w64, *window)
    ref_dx, ref_dw = reference_backward(dy64, x64, w64, *window)
    ref_gen = reference_forward(
        x64, F.conv2d(inputs['reduced'], inputs['weight'], inputs['bias']),
        *window)

    def poisoned(shape):
        return torch.full(shape, math.nan, dtype=dtype, device=device)

    previous = backend.MAX_INT32_NUMEL
    # 'long long' for every tensor size: the threshold is read per launch
    backend.MAX_INT32_NUMEL = -1 if index_type == 'long long' else previous
    results = {}
    try:
        recorder.take()
        out = poisoned(case.output_shape)
        got = backend.forward(gpu['input'], gpu['kernel'], *window, out=out)
        synchronize()
        assert got is out, 'forward did not write the out= tensor'
        results['involution_forward'] = (relative_error(out, ref_out),
                                         '/'.join(recorder.take()))
        dx, dw = poisoned(case.input_shape), poisoned(case.kernel_shape)
        got = backend.backward(
            gpu['grad_output'],
            gpu['input'],
            gpu['kernel'],
            *window,
            grad_input=dx,
            grad_kernel=dw)
        synchronize()
        assert got[0] is dx and got[1] is dw, \
            'backward did not write the grad_input=/grad_kernel= tensors'
        launched = recorder.take()  # grad_input, then grad_kernel
        results['involution_grad_input'] = (relative_error(dx, ref_dx),
                                            launched[0])
        results['involution_grad_kernel'] = (relative_error(dw, ref_dw),
                                             launched[1])
        gen = backend.generated_forward(gpu['input'], gpu['reduced'],
                                        gpu['weight'], gpu['bias'], *window)
        synchronize()
        results['generated_forward'] = (relative_error(gen, ref_gen),
                                        '/'.join(recorder.take()))
    finally:
        backend.MAX_INT32_NUMEL = previous
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Exit status 0 when every case passes, 1 otherwise.')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    parse_args(argv)
    backend = load_backend()
    reason = unavailable_reason(backend)
    if reason is not None:
        print(f'FAIL: {UNAVAILABLE}: {reason}', file=sys.stderr, flush=True)
        return 1
    import cupy

    # exact float32 for the cuDNN conv of generated_forward
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(
        f'device {torch.cuda.get_device_name()}, torch {torch.__version__} '
        f'(CUDA {torch.version.cuda}), cupy {cupy.__version__}; kernels '
        f'{backend.KERNEL_SOURCE_PATH}',
        flush=True)
    recorder = LaunchRecorder(backend)
    generator = torch.Generator().manual_seed(0)
    failures = total = 0
    for case in cases():
        for dtype in DTYPES:
            inputs = random_inputs(case, dtype, generator)
            dtype_name = str(dtype).replace('torch.', '')
            for index_type in INDEX_TYPES:
                try:
                    results = run_case(backend, recorder, case, dtype,
                                       index_type, inputs)
                except Exception:  # report it, go on to the next case
                    results = {}
                    error = traceback.format_exc().strip().splitlines()[-1]
                for kernel in KERNELS:
                    total += 1
                    if kernel in results:
                        err, launched = results[kernel]
                        ok = (
                            err <= TOLERANCES[dtype]
                            and launched == index_type)
                        detail = f'max rel err {err:.2e} (tol ' \
                                 f'{TOLERANCES[dtype]:.0e})'
                        if launched != index_type:
                            detail += f', launched index type {launched!r}'
                    else:
                        ok, detail = False, f'error: {error}'
                    failures += not ok
                    print(
                        f'{"PASS" if ok else "FAIL"} {kernel:22} '
                        f'{dtype_name:8} idx={index_type:9} '
                        f'{case.describe()} {detail}',
                        flush=True)
    print(
        f'{total - failures}/{total} cases passed' +
        (f', {failures} FAILED' if failures else ''),
        flush=True)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
