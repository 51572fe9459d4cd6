"""Forked children die with a SIGKILLed parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from .common import TOOLS

PARENT = textwrap.dedent(f'''
    import os, sys, time
    sys.path.append({str(TOOLS)!r})
    from mmplug_involution.apis import kill_forked_children_with_parent
    assert kill_forked_children_with_parent()
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Slow(Dataset):
        def __len__(self):
            return 1000
        def __getitem__(self, i):
            return torch.zeros(1000)

    loader = DataLoader(Slow(), batch_size=1, num_workers=2,
                        persistent_workers=True, prefetch_factor=2)
    iterator = iter(loader)
    next(iterator)
    print(' '.join(str(w.pid) for w in iterator._workers), flush=True)
    time.sleep(600)  # killed by the test
''')


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split()[2] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='Linux')
def test_data_loader_workers_die_with_a_killed_main_process():
    parent = subprocess.Popen([sys.executable, '-c', PARENT],
                              stdout=subprocess.PIPE,
                              text=True)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        # torch's own watchdog looks every 5 s (if the worker is not blocked)
        deadline = time.monotonic() + 2
        while any(_alive(pid) for pid in workers) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        parent.kill()
