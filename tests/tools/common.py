"""Helpers shared by the tests of the command-line tools."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
TOOLS = ROOT / 'tools'


def run_script(script, *args) -> subprocess.CompletedProcess:
    """``python script args`` in the repository; the finished process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True)


def tool_module(name: str, folder: str = ''):
    """The module ``name`` the scripts in ``tools/<folder>`` import from
    beside them (``harness`` in ``tools/dev/benchmarks``, ``shapes`` in
    ``tools/data``, ...), imported as they import it: with that folder on
    ``sys.path`` (appended, once, in the test process)."""
    path = str(TOOLS / folder)
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(name)


def load_tool(path: Path):
    """The tool at ``path`` as a module, to call its functions in-process."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
