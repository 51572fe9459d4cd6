"""Helpers shared by the generated dataset tests."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
TOOL = ROOT / 'tools' / 'data' / 'generate_shapes.py'


def read_files(out_dir):
    """``{relative path: bytes}`` of every file under ``out_dir``."""
    return {
        path.relative_to(out_dir): path.read_bytes()
        for path in sorted(Path(out_dir).rglob('*')) if path.is_file()
    }


def run_tool_twice(fmt, out_dir):
    """Run the CLI on 2 train and 1 val 64x48 images, then check that a
    second run into the now non-empty ``out_dir`` fails cleanly.

    Returns:
        str: The first run's standard output.
    """
    command = [
        sys.executable,
        str(TOOL), fmt,
        str(out_dir), '--num-train', '2', '--num-val', '1', '--image-size',
        '64', '48', '--seed', '5'
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=ROOT)
    assert 'train: 2 images' in result.stdout
    assert 'val: 1 images' in result.stdout
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0
    assert 'error:' in refused.stderr and 'not empty' in refused.stderr
    assert 'Traceback' not in refused.stderr
    return result.stdout
