"""The ``cupy`` backend's CUDA kernel source and launcher, without a GPU.

* NVRTC compiles every template instantiation CuPy will ask for, in every
  dtype, for sm_70, sm_80 and sm_90, with the package's own compile options.
* The same source, built for the host with g++
  (tests/ops/cuda_host_emulation.cpp) and run thread by thread, matches the
  float64 reference: forward, grad-input and grad-kernel, every dtype, both
  index types, odd sizes, strides, dilations, and a grid smaller than the
  tensor so the grid-stride loops wrap. Outputs are poisoned with NaN before
  each launch, so an element a kernel forgets to write fails the test.
"""
import ctypes
import glob
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmplug_involution.ops.backends import cupy as cupy_backend
from mmplug_involution.ops.backends.cupy import (CUDA_TYPES,
                                                 KERNEL_SOURCE_PATH,
                                                 NVRTC_OPTIONS,
                                                 kernel_name_expressions)
from .reference import involution_reference, output_size, random_case

HERE = Path(__file__).parent
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPE_CODES = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3
}
# relative to the largest reference magnitude; 16-bit outputs are rounded once
TOLERANCE = {
    torch.float32: 1e-5,
    torch.float64: 1e-12,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3
}

# --------------------------------------------------------------- NVRTC compile


def _find_nvrtc():
    """The oldest NVRTC installed (CUDA 12's still targets sm_70; torch's
    CUDA 13 build brings a CUDA 13 one beside it)."""
    roots = [Path(p) for p in sys.path if p.endswith('site-packages')]
    patterns = [str(r / 'nvidia' / '**' / 'libnvrtc.so*') for r in roots]
    patterns.append('/usr/local/cuda/lib64/libnvrtc.so*')
    found = [
        path for pattern in patterns
        for path in glob.glob(pattern, recursive=True)
        if 'builtins' not in path and 'alt' not in path
    ]
    return min(found, key=_soname_version, default=None)


def _soname_version(path):
    """(12, 0) for ``.../libnvrtc.so.12``; unversioned names sort last."""
    suffix = path.rpartition('.so')[2].lstrip('.')
    return tuple(map(int, suffix.split('.'))) if suffix else (1 << 30, )


@pytest.fixture(scope='module')
def nvrtc():
    path = _find_nvrtc()
    if path is None:
        pytest.skip('libnvrtc not found: tools/dev/setup_env.sh installs '
                    'nvidia-cuda-nvrtc-cu12')
    lib = ctypes.CDLL(path)
    major, minor = ctypes.c_int(), ctypes.c_int()
    assert lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) == 0
    lib.version = (major.value, minor.value)
    return lib


def _nvrtc_compile(lib, source, arch, names):
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(
        ctypes.byref(prog), source.encode(), b'involution_kernels.cu', 0, None,
        None) == 0
    try:
        for name in names:
            assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0
        opts = [o.encode() for o in NVRTC_OPTIONS] + [f'-arch={arch}'.encode()]
        result = lib.nvrtcCompileProgram(prog, len(opts),
                                         (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        lowered = {}
        if result == 0:
            for name in names:
                out = ctypes.c_char_p()
                assert lib.nvrtcGetLoweredName(prog, name.encode(),
                                               ctypes.byref(out)) == 0
                lowered[name] = out.value.decode()
            assert lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)) == 0
        return result, log.value.decode(errors='replace'), lowered, size.value
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.parametrize('arch', ['sm_70', 'sm_80', 'sm_90'])
def test_kernels_compile_for_every_dtype(nvrtc, arch):
    if arch == 'sm_70' and nvrtc.version[0] >= 13:
        pytest.skip(f'NVRTC {nvrtc.version} no longer targets sm_70')
    names = kernel_name_expressions()
    assert len(names) == 3 * len(CUDA_TYPES) * 2
    result, log, lowered, cubin_size = _nvrtc_compile(
        nvrtc, KERNEL_SOURCE_PATH.read_text(), arch, names)
    assert result == 0, f'NVRTC failed for {arch}:\n{log}'
    warnings = [
        line for line in log.lower().splitlines()
        if 'warning' in line and 'are deprecated' not in line
    ]
    assert not warnings, log
    assert set(lowered) == set(names) and cubin_size > 0


def test_broken_source_fails_to_compile(nvrtc):
    """The compile check is real: a syntax error is reported."""
    source = KERNEL_SOURCE_PATH.read_text().replace('acc_t acc = 0;',
                                                    'acc_t acc = ;', 1)
    result, log, _, _ = _nvrtc_compile(nvrtc, source, 'sm_80',
                                       kernel_name_expressions()[:1])
    assert result != 0 and 'error' in log


# -------------------------------------------------------------- host emulation


@pytest.fixture(scope='module')
def host_kernels(tmp_path_factory):
    compiler = shutil.which('g++')
    if compiler is None:
        pytest.skip('g++ is needed to build the host emulation of the kernels')
    lib_path = tmp_path_factory.mktemp('emulation') / 'involution_host.so'
    subprocess.run([
        compiler, '-std=c++17', '-O1', '-shared', '-fPIC', '-Wall', '-Werror',
        f'-I{KERNEL_SOURCE_PATH.parent}',
        str(HERE / 'cuda_host_emulation.cpp'), '-o',
        str(lib_path)
    ],
                   check=True,
                   capture_output=True,
                   text=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.run_involution_kernel.restype = ctypes.c_int
    return lib


def _emulate(lib,
             kernel_id,
             dtype,
             index64,
             a,
             b,
             out_shape,
             sizes,
             blocks=3,
             threads=32):
    out = torch.full(out_shape, float('nan'), dtype=dtype)  # poison
    a, b = a.contiguous(), b.contiguous()
    sizes = (ctypes.c_longlong * 11)(out.numel(), *sizes)
    rc = lib.run_involution_kernel(kernel_id, DTYPE_CODES[dtype], int(index64),
                                   ctypes.c_void_p(a.data_ptr()),
                                   ctypes.c_void_p(b.data_ptr()),
                                   ctypes.c_void_p(out.data_ptr()), sizes,
                                   blocks, threads)
    assert rc == 0
    return out


def _assert_close(actual, expected, dtype):
    assert not torch.isnan(actual).any(), 'kernel left poisoned elements'
    scale = expected.abs().max().clamp_min(1.0)
    err = (actual.double() - expected).abs().max() / scale
    assert err < TOLERANCE[dtype], f'relative error {err:.3e} for {dtype}'


EMULATION_CASES = [
    # n, c, h, w, K, stride, dilation, groups
    (1, 4, 7, 5, 3, 1, 1, 1),
    (2, 6, 9, 8, 3, 2, 1, 3),
    (1, 4, 11, 7, 5, 2, 2, 2),
    (2, 8, 13, 10, 7, 2, 1, 2),
    (1, 2, 5, 9, 7, 1, 2, 1),
    (1, 3, 6, 6, 1, 2, 1, 3),
    (1, 2, 10, 11, 5, 3, 1, 1),
]


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('index64', [False, True], ids=['int32', 'int64'])
@pytest.mark.parametrize('case', EMULATION_CASES, ids=str)
def test_host_emulation_matches_reference(host_kernels, dtype, index64, case):
    n, c, h, w, k, s, d, g = case
    p = d * (k - 1) // 2
    gen = torch.Generator().manual_seed(sum(case))
    x, ker = random_case(n, c, h, w, k, s, d, g, dtype=dtype, generator=gen)
    ho, wo = output_size(h, k, s, p, d), output_size(w, k, s, p, d)
    sizes = (c, h, w, ho, wo, g, k, s, p, d)
    # reference on the same (rounded) inputs, in float64
    xr = x.double().requires_grad_(True)
    kr = ker.double().requires_grad_(True)
    ref = involution_reference(xr, kr, k, s, p, d)
    grad_out = torch.randn(
        ref.shape, dtype=torch.float64, generator=gen).to(dtype)
    ref.backward(grad_out.double())

    y = _emulate(host_kernels, 0, dtype, index64, x, ker, (n, c, ho, wo),
                 sizes)
    _assert_close(y, ref.detach(), dtype)
    dx = _emulate(host_kernels, 1, dtype, index64, grad_out, ker, x.shape,
                  sizes)
    _assert_close(dx, xr.grad, dtype)
    dk = _emulate(host_kernels, 2, dtype, index64, grad_out, x, ker.shape,
                  sizes)
    _assert_close(dk, kr.grad, dtype)


def test_16bit_rounding_is_nearest_even(host_kernels):
    """grad-kernel with K=1, C=2, G=1 sums two products in float.

    It then rounds once. Sums exactly half-way between two bf16 values must
    round to the even one, as torch's own float32 -> bfloat16/float16
    conversion does.
    """
    x = torch.tensor([[1.0, 2.0**-8], [1.0 + 2.0**-7, 2.0**-8],
                      [1.0, 2.0**-8 + 2.0**-12], [3.0, -2.0**-9]])
    dy = torch.ones_like(x)
    exact = (x * dy).sum(1)
    for dtype in (torch.bfloat16, torch.float16):
        dw = _emulate(host_kernels, 2, dtype, False,
                      dy.to(dtype).view(4, 2, 1, 1),
                      x.to(dtype).view(4, 2, 1, 1), (4, 1, 1, 1),
                      (2, 1, 1, 1, 1, 1, 1, 1, 0, 1))
        assert torch.equal(dw.view(-1), exact.to(dtype)), dtype


def test_emulation_is_not_vacuous(host_kernels):
    """A kernel off by one tap would be caught by the comparisons above."""
    gen = torch.Generator().manual_seed(0)
    x, ker = random_case(
        1, 2, 6, 6, 3, 1, 1, 1, dtype=torch.float64, generator=gen)
    y = _emulate(host_kernels, 0, torch.float64, False, x, ker, (1, 2, 6, 6),
                 (2, 6, 6, 6, 6, 1, 3, 1, 0, 1))  # wrong padding on purpose
    ref = involution_reference(x, ker, 3, 1, 1, 1)
    assert (y - ref).abs().max() > 1e-3


# ----------------------------------------- the CuPy launcher, on the emulation


class _FakeCupy:
    """The few CuPy names the launcher uses, running kernels on the emulation.

    It checks what a real launch depends on: the name expression exists, the
    launch happens inside torch's current stream (CuPy launches on its current
    stream), pointer arguments are 64-bit and every size argument has the
    kernel's index type. ``cupy13=True`` offers only ``ExternalStream``, as
    CuPy 13 does; otherwise only ``Stream.from_external``, as CuPy 14 prefers.
    """
    int32, int64, uint64 = np.int32, np.int64, np.uint64

    def __init__(self, lib, cupy13):
        self.lib = lib
        self.modules = []
        self.current_stream = None
        fake = self

        class _Context:

            def __init__(self, value=None):
                self.value = value

            def __enter__(self):
                self.saved = fake.current_stream
                if self.value is not None:
                    fake.current_stream = self.value
                return self

            def __exit__(self, *exc):
                fake.current_stream = self.saved
                return False

        class _Stream:

            @staticmethod
            def from_external(torch_stream):
                return _Context(torch_stream.cuda_stream)

        class _Cuda:
            Device = _Context
            Stream = type('Stream', (), {}) if cupy13 else _Stream

            @staticmethod
            def ExternalStream(ptr, device_id):
                assert cupy13, 'CuPy 14 deprecates ExternalStream'
                return _Context(ptr)

        self.cuda = _Cuda

        class _RawModule:

            def __init__(self, code, options, name_expressions):
                assert code == KERNEL_SOURCE_PATH.read_text()
                assert tuple(options) == NVRTC_OPTIONS
                self.names = set(name_expressions)
                fake.modules.append(self)

            def get_function(self, name):
                assert name in self.names, name
                return lambda grid, block, args: fake.launch(
                    name, grid, block, args)

        self.RawModule = _RawModule

    def launch(self, name, grid, block, args):
        kernel, rest = name.split('<')
        ctype, itype = (t.strip() for t in rest.rstrip('>').split(','))
        index64 = itype == 'long long'
        assert self.current_stream == 7, 'not launched on torch\'s stream'
        assert len(args) == 14
        assert all(type(a) is np.uint64 for a in args[:3])
        scalar = np.int64 if index64 else np.int32
        assert all(type(a) is scalar
                   for a in args[3:]), [type(a) for a in args]
        kernel_id = ('involution_forward', 'involution_grad_input',
                     'involution_grad_kernel').index(kernel)
        dtype_code = ['float', 'double', 'half_t', 'bfloat16_t'].index(ctype)
        sizes = (ctypes.c_longlong * 11)(*(int(a) for a in args[3:]))
        pointers = [ctypes.c_void_p(int(a)) for a in args[:3]]
        assert self.lib.run_involution_kernel(kernel_id, dtype_code,
                                              int(index64), *pointers, sizes,
                                              grid[0], block[0]) == 0


@pytest.fixture(params=['cupy14', 'cupy13'])
def fake_cupy(host_kernels, monkeypatch, request):
    from types import SimpleNamespace
    fake = _FakeCupy(host_kernels, cupy13=request.param == 'cupy13')
    monkeypatch.setitem(sys.modules, 'cupy', fake)
    monkeypatch.setattr(cupy_backend, '_module', None)
    monkeypatch.setattr(cupy_backend, '_functions', {})
    monkeypatch.setattr(cupy_backend, '_sm_counts', {})
    monkeypatch.setattr(
        torch.cuda, 'get_device_properties',
        lambda device: SimpleNamespace(multi_processor_count=1))
    monkeypatch.setattr(
        torch.cuda,
        'current_stream',
        lambda device=None: SimpleNamespace(cuda_stream=7))
    return fake


@pytest.mark.parametrize('index64', [False, True], ids=['int32', 'int64'])
def test_launcher_end_to_end_on_emulation(fake_cupy, monkeypatch, index64):
    if index64:
        monkeypatch.setattr(cupy_backend, 'MAX_INT32_NUMEL', 10)
    for dtype, case in ((torch.float32, (2, 8, 9, 7, 3, 2, 1, 2)),
                        (torch.float16, (1, 6, 11, 10, 5, 1, 2, 3)),
                        (torch.float64, (2, 4, 13, 5, 7, 2, 2, 1)),
                        (torch.bfloat16, (1, 4, 6, 9, 3, 1, 1, 4))):
        n, c, h, w, k, s, d, g = case
        p = d * (k - 1) // 2
        gen = torch.Generator().manual_seed(sum(case))
        x, ker = random_case(
            n, c, h, w, k, s, d, g, dtype=dtype, generator=gen)
        xr = x.double().requires_grad_(True)
        kr = ker.double().requires_grad_(True)
        ref = involution_reference(xr, kr, k, s, p, d)
        gy = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        ref.backward(gy)
        # non-contiguous inputs exercise the launcher's .contiguous()
        x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
        y = torch.full(ref.shape, float('nan'), dtype=dtype)
        cupy_backend.forward(x_nc, ker, k, s, p, d, out=y)
        dx = torch.full_like(x, float('nan'))
        dk = torch.full_like(ker, float('nan'))
        cupy_backend.backward(
            gy.to(dtype), x_nc, ker, k, s, p, d, grad_input=dx, grad_kernel=dk)
        _assert_close(y, ref.detach(), dtype)
        _assert_close(dx, xr.grad, dtype)
        _assert_close(dk, kr.grad, dtype)
    # one compiled module served every dtype and shape
    assert len(fake_cupy.modules) == 1
