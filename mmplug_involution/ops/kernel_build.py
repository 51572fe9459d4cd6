"""Building the libraries of the involution CPU kernels, once per machine.

The kernels' core (``csrc/cpp/``: the passes, their geometry and vector
type) depends on no framework. Each library compiles the core with one
front-end of ``csrc/cpp/frontends/``: ``torch_ops.cpp`` (the ``cpp``
backend's torch ops, :mod:`..backends.cpp`) or ``openvino_ops.cpp`` (the
OpenVINO extension, :mod:`mmplug_involution.deploy.openvino`). A library is
built for this machine's vector instruction set (AVX-512, AVX2 or plain)
into a cache folder keyed by its sources, its flags and what it links
against: ``$MMPLUG_CACHE_DIR/<kind>/<isa>-<key>/`` (default
``~/.cache/mmplug-involution``), under a file lock, so that processes
starting at once build it once; every later process only loads it.
"""
import contextlib
import fcntl
import functools
import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Sequence

__all__ = [
    'CORE_SOURCE_DIR', 'FRONTEND_DIR', 'vector_isa', 'isa_flags', 'cache_root',
    'kernel_sources', 'library_path', 'ensure_built'
]

CORE_SOURCE_DIR = Path(__file__).parent / 'csrc' / 'cpp'
FRONTEND_DIR = CORE_SOURCE_DIR / 'frontends'
# the instruction sets' compiler flags (those ATen builds its own vectorised
# kernels of each set with)
_ISA_FLAGS = {
    'avx512': ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mfma'],
    'avx2': ['-mavx2', '-mfma', '-mf16c'],
    'default': [],
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


def isa_flags() -> List[str]:
    """The compiler flags of :func:`vector_isa`."""
    return list(_ISA_FLAGS[vector_isa()])


def cache_root() -> Path:
    """``$MMPLUG_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmplug-involution``,
    else ``~/.cache/mmplug-involution``."""
    root = os.environ.get('MMPLUG_CACHE_DIR')
    if root:
        return Path(root)
    xdg = os.environ.get('XDG_CACHE_HOME')
    return Path(xdg or Path.home() / '.cache') / 'mmplug-involution'


def kernel_sources(frontend: str) -> List[Path]:
    """The core's files (headers and ``.cpp``, sorted), then the front-end
    ``frontend`` (a file name in ``frontends/``)."""
    core = sorted(path for path in CORE_SOURCE_DIR.iterdir()
                  if path.suffix in ('.h', '.cpp'))
    return core + [FRONTEND_DIR / frontend]


def library_path(kind: str, name: str, sources: Sequence[Path],
                 build_facts: Sequence[str]) -> Path:
    """Where the library ``name``.so built from ``sources`` lives (or
    would): ``cache_root()/kind/<isa>-<key>/``, the key hashing the name
    and content of every source and ``build_facts`` (flags, the versions
    it links against)."""
    key = hashlib.sha256()
    for source in sources:
        key.update(source.name.encode() + b'\0')
        key.update(source.read_bytes() + b'\0')
    key.update(' '.join([sys.version, *build_facts]).encode())
    folder = cache_root() / kind / f'{vector_isa()}-{key.hexdigest()[:16]}'
    return folder / f'{name}.so'


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path``'s build, across processes."""
    lock = path.parent.with_name(path.parent.name + '.lock')
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built(path: Path, compile: Callable[[Path], None],
                 what: str) -> bool:
    """Build the library at ``path`` with ``compile(path)`` unless it is
    there (or another process built it while this one waited for the
    lock), saying so in one line on stderr; whether this call built it."""
    if path.exists():
        return False
    with _build_lock(path):
        if path.exists():
            return False
        print(
            f'mmplug_involution: building {what} for this machine into '
            f'{path.parent} (once; about a minute)',
            file=sys.stderr,
            flush=True)
        compile(path)
    return True
