"""Stand in a GPU machine's image for ``tools/dev/gpu/run.sh --cpu``.

The lent GPU machine's image has torch, torchvision, numpy, matplotlib,
opencv, pytest, CuPy (with NVRTC), onnx, onnxruntime and their dependencies,
and none of OpenMMLab. To run the kit's install here as it runs there, this
links those distributions (and only those) from the project's environment
into a folder and puts the folder on the kit environment's path with a
``.pth`` file, after the environment's own site-packages: whatever the kit
installs is found first, and a package the kit forgets is missing here as it
would be there.

Usage: python tools/dev/gpu/image_packages.py PROJECT_VENV IMAGE_DIR
(run with the kit environment's python).
"""
import fnmatch
import os
import site
import sys
from importlib import metadata
from pathlib import Path

#: distributions of the image (names as pip spells them, patterns allowed)
IMAGE_DISTRIBUTIONS = ('torch', 'torchvision', 'triton', 'sympy', 'mpmath',
                       'networkx', 'jinja2', 'markupsafe', 'filelock',
                       'fsspec', 'typing_extensions', 'nvidia-*',
                       'cuda-bindings', 'cuda-pathfinder', 'cupy-cuda*',
                       'fastrlock', 'numpy', 'matplotlib', 'contourpy',
                       'cycler', 'fonttools', 'kiwisolver', 'pyparsing',
                       'python-dateutil', 'pillow', 'opencv-python*', 'pytest',
                       'pluggy', 'iniconfig', 'onnx', 'onnxruntime',
                       'protobuf', 'ml_dtypes', 'flatbuffers', 'coloredlogs',
                       'humanfriendly')


def _normalised(name: str) -> str:
    return name.lower().replace('_', '-')


def image_entries(site_packages: Path):
    """Top-level entries (packages, modules, .dist-info folders) of the
    image's distributions in ``site_packages``."""
    entries = set()
    for dist in metadata.distributions(path=[str(site_packages)]):
        name = _normalised(dist.metadata['Name'])
        if not any(
                fnmatch.fnmatch(name, _normalised(pattern))
                for pattern in IMAGE_DISTRIBUTIONS):
            continue
        for file in dist.files or ():
            top = file.parts[0]
            if top not in ('..',
                           '__pycache__') and (site_packages / top).exists():
                entries.add(top)
    return sorted(entries)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    venv, image = Path(sys.argv[1]), Path(sys.argv[2])
    found = sorted(venv.glob('lib/python*/site-packages'))
    if not found:
        sys.exit(f'no site-packages in {venv}: run tools/dev/setup_env.sh')
    source = found[0]
    image.mkdir(parents=True, exist_ok=True)
    entries = image_entries(source)
    for entry in entries:
        link = image / entry
        if not link.exists():
            os.symlink(source / entry, link)
    own = Path(site.getsitepackages()[0])
    (own / 'zz_gpu_image.pth').write_text(f'{image}\n')
    print(f'{len(entries)} entries of the image linked from {source} into '
          f'{image}')


if __name__ == '__main__':
    main()
