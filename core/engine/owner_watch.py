"""A worker process ends when the process that owns its pool dies, however that process died.

Workers are children of multiprocessing's fork server, not of Stave: when
Stave is killed outright (SIGKILL, the OOM killer, a crash), the fork server
stays up and a worker goes on with its stage, for minutes with a long file or
an external tool, beside the ``stave resume`` that redoes the same stage.
A parent-death signal cannot help (the parent is the fork server, which
outlives its owner). So each worker runs a daemon thread that waits for its
owner to exit (a pidfd on Linux: readable when the process has gone; else a
poll once a second), then kills the tools it started, stops the fork server
(nothing else can use it any more) and exits.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

from core.resilience import children

POLL_S = 1.0  # where pidfd is missing


def watch_owner(owner_pid: int) -> None:
    """Call in a worker as it starts: end this worker when ``owner_pid`` exits."""
    if owner_pid == os.getpid() or os.name != "posix":  # (on Windows os.kill(pid, 0) would terminate the owner)
        return
    threading.Thread(target=_wait_then_exit, args=(owner_pid,), name="stave-owner-watch", daemon=True).start()


def _wait_then_exit(owner_pid: int) -> None:
    _wait_for_exit(owner_pid)
    children.kill_all()
    _stop_orphaned_fork_server(owner_pid)
    os._exit(1)


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone already
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        fd = None
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has exited
        return
    while _alive(pid):
        time.sleep(POLL_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone (or its pid now belongs to someone else's process)
        return False
    return True


def _stop_orphaned_fork_server(owner_pid: int) -> None:
    """This worker's parent, if it is the owner's fork server (which would otherwise idle on forever)."""
    parent = os.getppid()
    if parent in (1, owner_pid):
        return
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            if b"multiprocessing.forkserver" not in f.read():
                return
        os.kill(parent, signal.SIGKILL)
    except OSError:  # no /proc (not Linux), or it has gone
        pass
