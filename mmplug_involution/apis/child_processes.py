"""Forked children (data-loader workers) that die with the process that
forked them.

torch's data-loader workers check for a dead parent only between batches; a
worker blocked handing a batch to a main process that was killed (SIGKILL,
out of memory) waits forever, holding its memory. Linux can instead send a
child a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``); this
module sets SIGKILL for every child forked after
:func:`kill_forked_children_with_parent` is called.
"""
import ctypes
import os
import signal
import sys

__all__ = ['kill_forked_children_with_parent']

_PR_SET_PDEATHSIG = 1
_forking = [0]  # pid of the process that is forking (set just before)
_registered = []


def _note_parent() -> None:
    _forking[0] = os.getpid()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here: the torch watchdog is the only guard
    if os.getppid() != _forking[0]:  # the parent died before prctl
        os._exit(1)


def kill_forked_children_with_parent() -> bool:
    """From now on, every child this process forks is killed when it dies.

    Linux only (elsewhere returns False and does nothing); idempotent. Only
    forked children (the data loaders' default start method on Linux), not
    programs started through ``subprocess``.
    """
    if not sys.platform.startswith('linux'):
        return False
    if not _registered:
        os.register_at_fork(
            before=_note_parent, after_in_child=_die_with_parent)
        _registered.append(True)
    return True
