"""Build and load the compiled involution CPU kernels (``csrc/involution_cpu.cpp``).

The kernels are built by torch's C++ extension machinery for this machine's
vector instruction set (AVX-512, AVX2 or plain), into a cache folder keyed by
the source, torch's version, the Python version and that instruction set:
``$MMPLUG_CACHE_DIR/cpu_kernels/<key>/`` (default
``~/.cache/mmplug-involution``). ``tools/setup_env.sh`` builds them
(:func:`build_cpu_kernels`), so a fresh clone on a machine that has built them
reuses the library, and a changed source builds anew. At run time the library is only loaded, never compiled: when it is
missing, :func:`cpu_kernels_error` says how to build it and the operator
falls back to the PyTorch path.

The library registers ``torch.ops.mmplug_involution_cpu.forward``,
``.backward`` and ``.generated_forward`` (see :func:`involution_forward_cpp`
and :func:`generated_involution_forward_cpp`).
"""
import functools
import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'CPU_SOURCE_PATH', 'build_cpu_kernels', 'cpu_kernels_error',
    'cpu_kernels_path', 'involution_forward_cpp', 'involution_backward_cpp',
    'generated_involution_forward_cpp', 'vector_isa'
]

CPU_SOURCE_PATH = Path(__file__).with_name('csrc') / 'involution_cpu.cpp'
LIBRARY_NAME = 'mmplug_involution_cpu'
BUILD_HINT = ('build them with `bash tools/setup_env.sh` (or `python -c "from '
              'mmplug_involution.ops.involution_cpu import build_cpu_kernels; '
              'build_cpu_kernels()"`; needs a C++ compiler)')
# ATen's own flags for its vectorised kernels of each instruction set
_ISA_FLAGS = {
    'avx512': [
        '-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mfma',
        '-DCPU_CAPABILITY=AVX512', '-DCPU_CAPABILITY_AVX512'
    ],
    'avx2': [
        '-mavx2', '-mfma', '-mf16c', '-DCPU_CAPABILITY=AVX2',
        '-DCPU_CAPABILITY_AVX2'
    ],
    'default': ['-DCPU_CAPABILITY=DEFAULT'],
}


def _cpu_flags() -> set:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def vector_isa() -> str:
    """``'avx512'``, ``'avx2'`` or ``'default'``: what this CPU runs."""
    if platform.machine() not in ('x86_64', 'AMD64'):
        return 'default'
    flags = _cpu_flags()
    if {'avx512f', 'avx512bw', 'avx512vl', 'avx512dq'} <= flags:
        return 'avx512'
    if {'avx2', 'fma'} <= flags:
        return 'avx2'
    return 'default'


def _cflags() -> List[str]:
    # -fopenmp: at::parallel_for runs its body on torch's OpenMP threads only
    # when the including code is compiled with OpenMP (serially otherwise)
    return ['-O3', '-fopenmp'] + _ISA_FLAGS[vector_isa()]


def _cache_root() -> Path:
    root = os.environ.get('MMPLUG_CACHE_DIR')
    if root:
        return Path(root)
    xdg = os.environ.get('XDG_CACHE_HOME')
    return Path(xdg or Path.home() / '.cache') / 'mmplug-involution'


def cpu_kernels_path() -> Path:
    """Where this machine's build of the kernels lives (or would)."""
    key = hashlib.sha256()
    key.update(CPU_SOURCE_PATH.read_bytes())
    key.update(' '.join([torch.__version__, sys.version, *_cflags()]).encode())
    folder = _cache_root() / 'cpu_kernels' / (
        f'{vector_isa()}-{key.hexdigest()[:16]}')
    return folder / f'{LIBRARY_NAME}.so'


def build_cpu_kernels(verbose: bool = False) -> Path:
    """Compile the kernels into :func:`cpu_kernels_path` (if not there)."""
    path = cpu_kernels_path()
    if not path.exists():
        from torch.utils.cpp_extension import load
        build_dir = path.parent.with_name(path.parent.name + '.build')
        build_dir.mkdir(parents=True, exist_ok=True)
        load(  # compiles and loads the library into this process
            name=LIBRARY_NAME,
            sources=[str(CPU_SOURCE_PATH)],
            extra_cflags=_cflags(),
            extra_ldflags=['-fopenmp'],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=verbose)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the finished library appears under its final name in one step
        os.replace(build_dir / f'{LIBRARY_NAME}.so', path)
        _mark_loaded(path)
    _load(path)
    return path


_loaded: List[Path] = []


def _mark_loaded(path: Path) -> None:
    if not _loaded:
        _loaded.append(path)


def _load(path: Path) -> None:
    """Load the library once per process (its ops register once)."""
    if not _loaded:
        torch.ops.load_library(str(path))
        _loaded.append(path)


@functools.lru_cache(maxsize=None)
def cpu_kernels_error() -> Optional[str]:
    """``None`` once the compiled kernels are loaded, else why they are not.

    Only loads an existing build; never compiles.
    """
    path = cpu_kernels_path()
    if not path.exists():
        return (f'The compiled involution CPU kernels are not built for this '
                f'machine (no {path}); {BUILD_HINT}.')
    try:
        _load(path)
    except (OSError, RuntimeError) as error:
        return (f'The compiled involution CPU kernels at {path} do not load '
                f'({error}); rebuild them: delete that folder, then '
                f'{BUILD_HINT}.')
    return None


def involution_forward_cpp(input: Tensor, kernel: Tensor, kernel_size: int,
                           stride: int, padding: int,
                           dilation: int) -> Tensor:
    """(N, C, H, W), (N, G*K*K, Ho, Wo) -> (N, C, Ho, Wo), in the input's
    memory format (NCHW or channels_last)."""
    return torch.ops.mmplug_involution_cpu.forward(input, kernel, kernel_size,
                                                   stride, padding, dilation)


def involution_backward_cpp(grad_output: Tensor, input: Tensor,
                            kernel: Tensor, kernel_size: int, stride: int,
                            padding: int,
                            dilation: int) -> Tuple[Tensor, Tensor]:
    """``(grad_input, grad_kernel)``, in the input's memory format."""
    return torch.ops.mmplug_involution_cpu.backward(grad_output, input, kernel,
                                                    kernel_size, stride,
                                                    padding, dilation)


def generated_involution_forward_cpp(input: Tensor, reduced: Tensor,
                                     weight: Tensor, bias: Optional[Tensor],
                                     kernel_size: int, stride: int,
                                     padding: int, dilation: int) -> Tensor:
    """channels_last (N, C, H, W) and (N, R, Ho, Wo) -> (N, C, Ho, Wo): the
    involution with the kernel ``conv2d(reduced, weight, bias)`` computed on
    the fly, row chunk by row chunk (the kernel tensor is never written)."""
    return torch.ops.mmplug_involution_cpu.generated_forward(
        input, reduced, weight, bias, kernel_size, stride, padding, dilation)
