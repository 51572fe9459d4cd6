"""Build hook: the configs travel inside the package, as OpenMMLab's do.

Everything else is declared in ``setup.cfg``. A build (``pip install .``, a
wheel, an sdist's wheel) copies ``configs/`` and ``model-index.yml`` (the
index of the configs' metafiles) into the package as
``mmplug_involution/.mim/``, the folder mmengine and mim read for
``mmplug_involution::PATH`` config names. The C++ CPU kernels are not built
here: the first use builds them against the torch it runs with
(``mmplug_involution/ops/backends/cpp.py``).
"""
import os.path as osp
import shutil
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))


class BuildWithConfigs(build_py):
    """``build_py`` that adds ``configs/`` and ``model-index.yml`` to the
    package's ``.mim/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # reads the clone
            return
        mim = osp.join(self.build_lib, 'mmplug_involution', '.mim')
        shutil.rmtree(mim, ignore_errors=True)
        shutil.copytree(
            osp.join(ROOT, 'configs'),
            osp.join(mim, 'configs'),
            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        shutil.copy(osp.join(ROOT, 'model-index.yml'), mim)


setup(cmdclass={'build_py': BuildWithConfigs})
