"""The native involution op for OpenVINO: the package's CPU kernels as an
OpenVINO extension.

An export with ``custom_ops=True`` (:func:`..onnx_export.export_onnx`,
``tools/deploy/export_onnx.py --custom-ops``) writes each involution as one
node of the ONNX domain ``mmplug_involution``; OpenVINO runs those nodes
with the extension this module builds: the kernels' framework-free core
(``ops/csrc/cpp/``) with the OpenVINO front-end
(``ops/csrc/cpp/frontends/openvino_ops.cpp``), compiled with g++ against the
headers and libraries the ``openvino`` wheel ships, for this machine's
vector instruction set, once, into the cache the CPU kernels use
(``$MMPLUG_CACHE_DIR/openvino_extension/``, keyed by the sources, the flags
and the OpenVINO version; see :mod:`mmplug_involution.ops.kernel_build`).

The extension's ops compute in float32. On a CPU with bfloat16 OpenVINO's
default precision hint runs the model's convolutions in bfloat16 and hands
the custom ops float32 (it inserts the conversions); pass
``precision='f32'`` for float32 throughout.
"""
import concurrent.futures
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..ops.kernel_build import (ensure_built, isa_flags, kernel_sources,
                                library_path)
from ..ops.onnx import CUSTOM_DOMAIN

__all__ = [
    'OPENVINO_INSTALL', 'openvino_extension', 'compile_openvino',
    'custom_op_types'
]

OPENVINO_INSTALL = "pip install 'mmplug-involution[openvino]'"
LIBRARY_NAME = 'mmplug_involution_openvino'
_FLAGS = [
    '-O3', '-std=c++17', '-fPIC', '-fvisibility=hidden',
    '-fvisibility-inlines-hidden'
]


def _openvino():
    try:
        import openvino
    except ImportError as error:
        raise ImportError(f'The involution OpenVINO extension needs OpenVINO: '
                          f'{OPENVINO_INSTALL}.') from error
    return openvino


def _openvino_files() -> Dict[str, Any]:
    """The wheel's include folder, library folder and the libraries to link
    (their versioned names: the wheel has no unversioned ones)."""
    openvino = _openvino()
    root = Path(openvino.__file__).parent
    include, libs = root / 'include', root / 'libs'

    def library(stem: str) -> str:
        found = sorted(libs.glob(f'{stem}.so.*'))
        if not found:
            raise RuntimeError(
                f'The OpenVINO package at {root} has no {stem}.so: the '
                'extension is built against the openvino wheel from PyPI '
                f'(openvino>=2024), which ships it; {OPENVINO_INSTALL}.')
        return found[0].name

    if not (include / 'openvino' / 'op' / 'op.hpp').exists():
        raise RuntimeError(
            f'The OpenVINO package at {root} ships no C++ headers '
            f'({include}): the extension is built against the openvino '
            f'wheel from PyPI (openvino>=2024), which does; '
            f'{OPENVINO_INSTALL}.')
    return dict(
        version=openvino.__version__,
        include=include,
        libs=libs,
        link=[
            library(stem)
            for stem in ('libopenvino', 'libopenvino_onnx_frontend', 'libtbb')
        ])


def _compile_flags() -> List[str]:
    return _FLAGS + isa_flags()


def _extension_path() -> Path:
    files = _openvino_files()
    return library_path('openvino_extension', LIBRARY_NAME,
                        kernel_sources('openvino_ops.cpp'),
                        [files['version'], *_compile_flags()])


def _compile(path: Path) -> None:
    """Compile each source to an object (in parallel), link them against
    the wheel's libraries, and move the library to ``path`` in one step."""
    compiler = os.environ.get('CXX', 'g++')
    if shutil.which(compiler) is None:
        raise RuntimeError(f'no C++ compiler ({compiler}) on PATH')
    files = _openvino_files()
    build_dir = path.parent.with_name(path.parent.name + '.build')
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [
        source for source in kernel_sources('openvino_ops.cpp')
        if source.suffix == '.cpp'
    ]
    objects = [build_dir / f'{source.stem}.o' for source in sources]

    def run(command: List[str]) -> None:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f'{" ".join(command)} failed:\n'
                               f'{result.stderr[-4000:]}')

    flags = _compile_flags() + [f'-I{files["include"]}']
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(
            pool.map(run,
                     [[compiler, *flags, '-c',
                       str(source), '-o',
                       str(target)]
                      for source, target in zip(sources, objects)]))
    partial = build_dir / f'{LIBRARY_NAME}.so'
    run([
        compiler, '-shared', '-o',
        str(partial), *map(str, objects), f'-L{files["libs"]}',
        *[f'-l:{name}' for name in files['link']],
        f'-Wl,-rpath,{files["libs"]}'
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, path)


def openvino_extension() -> str:
    """The path of the involution OpenVINO extension, built for this
    machine and OpenVINO version first where missing (once; about half a
    minute; one line on stderr says so). Load it with
    ``openvino.Core().add_extension(path)``.

    Raises:
        ImportError: OpenVINO is not installed.
        RuntimeError: it cannot be built (no compiler, an OpenVINO package
            without headers), with the reason.
    """
    path = None
    try:
        path = _extension_path()
        ensure_built(path, _compile, 'the involution OpenVINO extension')
    except RuntimeError as error:
        where = f' into {path.parent}' if path else ''
        raise RuntimeError(
            f'The involution OpenVINO extension could not be built{where}: '
            f'{error}\nIt needs g++ and the openvino wheel '
            f'({OPENVINO_INSTALL}); or export the model without custom ops '
            '(standard ONNX, slower in OpenVINO).') from error
    return str(path)


def custom_op_types(onnx_path: str) -> List[str]:
    """The op types of ``onnx_path``'s nodes in the package's custom domain
    (empty for a standard-ONNX export)."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    return sorted({
        node.op_type
        for node in model.graph.node if node.domain == CUSTOM_DOMAIN
    })


def compile_openvino(onnx_path: str,
                     device: str = 'CPU',
                     precision: Optional[str] = None,
                     config: Optional[Dict[str, Any]] = None,
                     core=None):
    """Read ``onnx_path`` (standard or custom-op export) and compile it
    for ``device`` with the involution extension loaded.

    Args:
        precision: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``'f32'``,
            ``'bf16'``, ``'f16'``); ``None`` keeps OpenVINO's default
            (bfloat16 on CPUs that have it).
        config: further compile properties (e.g.
            ``{'INFERENCE_NUM_THREADS': 2}``).
        core: an ``openvino.Core`` to use (a new one by default).

    Returns:
        the ``openvino.CompiledModel``.

    Raises:
        RuntimeError: the file has custom-op nodes and the extension cannot
            be built (what to install), or OpenVINO rejects the model.
    """
    openvino = _openvino()
    core = core or openvino.Core()
    try:
        core.add_extension(openvino_extension())
    except RuntimeError as error:
        # parsing the file (0.1 s for RedNet-50) only when it matters
        custom = custom_op_types(onnx_path)
        if custom:
            raise RuntimeError(
                f'{onnx_path} has {CUSTOM_DOMAIN} nodes ({", ".join(custom)}) '
                f'that only the package\'s OpenVINO extension runs, and it '
                f'is not available: {error}') from error
    properties = dict(config or {})
    if precision is not None:
        properties['INFERENCE_PRECISION_HINT'] = precision
    return core.compile_model(
        core.read_model(str(onnx_path)), device, properties)
