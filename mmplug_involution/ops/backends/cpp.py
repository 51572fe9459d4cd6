"""The ``cpp`` backend: the compiled involution CPU kernels (``csrc/cpp/``).

CPU tensors, NCHW and channels_last; the default there. The sources (one
file per layout and pass, see ``csrc/cpp/involution_cpu.h``) are built by
torch's C++ extension machinery, the core with its torch front-end
(``csrc/cpp/frontends/torch_ops.cpp``), for this machine's vector
instruction set (AVX-512, AVX2 or plain), into a cache folder keyed by every
source file, torch's version, the Python version and that instruction set:
``$MMPLUG_CACHE_DIR/cpu_kernels/<key>/`` (default
``~/.cache/mmplug-involution``; :mod:`..kernel_build`). The first use of
the backend in a process builds them there when they are missing
(:func:`build_cpu_kernels`: one line on stderr says so; about a minute on 2
cores), under a file lock, so that
processes starting at once build them once and the others wait and load that
build. Every later process, install or clone with the same sources, torch
and Python only loads the library; a changed source builds anew. Where the
build fails (no C++ compiler), :func:`unavailable_reason` says why and what
to do, and the operator falls back to the ``pytorch`` backend.

The library registers ``torch.ops.mmplug_involution_cpu.forward``,
``.backward`` and ``.generated_forward`` (see :func:`forward` and
:func:`generated_forward`).
"""
import functools
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..kernel_build import (CORE_SOURCE_DIR, ensure_built, isa_flags,
                            kernel_sources, library_path)

__all__ = [
    'NAME', 'DEVICE_TYPE', 'unavailable_reason', 'forward', 'backward',
    'generated_forward', 'generated_backward', 'CPU_SOURCE_DIR', 'cpu_sources',
    'build_cpu_kernels', 'cpu_kernels_error', 'cpu_kernels_path'
]

NAME = 'cpp'
DEVICE_TYPE = 'cpu'
CPU_SOURCE_DIR = CORE_SOURCE_DIR
LIBRARY_NAME = 'mmplug_involution_cpu'
BUILD_COMMAND = ('python -c "from mmplug_involution.ops.backends.cpp import '
                 'build_cpu_kernels; build_cpu_kernels(verbose=True)"')


def _cflags() -> List[str]:
    # -fopenmp: at::parallel_for runs its body on torch's OpenMP threads only
    # when the including code is compiled with OpenMP (serially otherwise).
    # Hidden visibility: the passes live in several files and call each
    # other's helpers; exported (interposable) symbols would keep the
    # compiler from specialising them (measured: the strided NCHW forward
    # 1.3x slower). The library exports nothing; its ops register at load.
    return [
        '-O3', '-fopenmp', '-fvisibility=hidden', '-fvisibility-inlines-hidden'
    ] + isa_flags()


def cpu_sources() -> List[Path]:
    """Every file of the kernels: the core's headers and ``.cpp`` files
    (sorted), then the torch front-end."""
    return kernel_sources('torch_ops.cpp')


def cpu_kernels_path() -> Path:
    """Where this machine's build of the kernels lives (or would): keyed by
    the name and content of every source file, torch, Python and flags."""
    return library_path('cpu_kernels', LIBRARY_NAME, cpu_sources(),
                        [torch.__version__, *_cflags()])


def _compile(path: Path, verbose: bool) -> None:
    """Compile the kernels and move the library to ``path`` in one step."""
    from torch.utils.cpp_extension import load
    build_dir = path.parent.with_name(path.parent.name + '.build')
    build_dir.mkdir(parents=True, exist_ok=True)
    load(  # compiles and loads the library into this process
        name=LIBRARY_NAME,
        sources=[
            str(source) for source in cpu_sources() if source.suffix == '.cpp'
        ],
        extra_cflags=_cflags(),
        extra_ldflags=['-fopenmp'],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(build_dir / f'{LIBRARY_NAME}.so', path)
    _mark_loaded(path)


def _ensure_built(path: Path, verbose: bool = False) -> bool:
    """Build the library at ``path`` unless it is there (once across
    processes); whether this call built it."""
    return ensure_built(path, lambda target: _compile(target, verbose),
                        'the involution CPU kernels')


def build_cpu_kernels(verbose: bool = False) -> Path:
    """Compile the kernels into :func:`cpu_kernels_path` (if not there, once
    across processes) and load them; returns the library's path."""
    path = cpu_kernels_path()
    _ensure_built(path, verbose)
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


def _last_lines(error: BaseException, count: int = 3) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return ' / '.join(lines[-count:]) or type(error).__name__


@functools.lru_cache(maxsize=None)
def cpu_kernels_error() -> Optional[str]:
    """``None`` once the compiled kernels are loaded (built first where
    missing), else why they are not and what to do."""
    path = cpu_kernels_path()
    try:
        _ensure_built(path)
    except Exception as error:  # no compiler, a failed compile
        return (
            f'The involution CPU kernels could not be built for this '
            f'machine into {path.parent} ({_last_lines(error)}); they '
            'need a C++ compiler (g++) with OpenMP and the Python headers. '
            f'Install them, then run `{BUILD_COMMAND}` to build the kernels '
            'and see the compiler\'s messages.')
    try:
        _load(path)
    except (OSError, RuntimeError) as error:
        return (f'The compiled involution CPU kernels at {path} do not load '
                f'({_last_lines(error)}); rebuild them: delete that folder, '
                f'then run `{BUILD_COMMAND}`.')
    return None


def unavailable_reason(device: torch.device) -> Optional[str]:
    """``None`` if the kernels run tensors on ``device``, else why not and
    what to do."""
    if device.type != DEVICE_TYPE:
        return (f'The involution CPU kernels need CPU tensors, got tensors on '
                f'{device}.')
    return cpu_kernels_error()


def forward(input: Tensor, kernel: Tensor, kernel_size: int, stride: int,
            padding: int, dilation: int) -> Tensor:
    """(N, C, H, W), (N, G*K*K, Ho, Wo) -> (N, C, Ho, Wo), in the input's
    memory format (NCHW or channels_last)."""
    return torch.ops.mmplug_involution_cpu.forward(input, kernel, kernel_size,
                                                   stride, padding, dilation)


def backward(grad_output: Tensor, input: Tensor, kernel: Tensor,
             kernel_size: int, stride: int, padding: int,
             dilation: int) -> Tuple[Tensor, Tensor]:
    """``(grad_input, grad_kernel)``, in the input's memory format."""
    return torch.ops.mmplug_involution_cpu.backward(grad_output, input, kernel,
                                                    kernel_size, stride,
                                                    padding, dilation)


def generated_forward(input: Tensor, reduced: Tensor, weight: Tensor,
                      bias: Optional[Tensor], kernel_size: int, stride: int,
                      padding: int, dilation: int) -> Tensor:
    """The involution with the kernel ``conv2d(reduced, weight, bias)``,
    computed in NHWC (an NCHW operand is converted) with the kernel made
    row chunk by row chunk on the fly: the kernel tensor is never written.
    Returns channels_last."""
    return torch.ops.mmplug_involution_cpu.generated_forward(
        input, reduced, weight, bias, kernel_size, stride, padding, dilation)


def generated_backward(grad_output: Tensor, input: Tensor, reduced: Tensor,
                       weight: Tensor, bias: Optional[Tensor],
                       kernel_size: int, stride: int, padding: int,
                       dilation: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(grad_input, grad_reduced, grad_weight, grad_bias)`` (grad_bias
    empty without a bias), in one fused NHWC pass per band of output rows:
    the band's kernel is regenerated, its gradient computed and contracted
    at once into the generator's gradients, so neither the kernel nor its
    gradient is ever a whole tensor.

    Every layout takes this path (an NCHW operand is converted): measured
    faster than the NCHW kernels with the kernel tensor written.
    """
    return torch.ops.mmplug_involution_cpu.generated_backward(
        grad_output, input, reduced, weight, bias, kernel_size, stride,
        padding, dilation)
