"""External tools a worker process started, so that they die with it.

A stage that starts a tool in its own process group (Demucs) registers the
group here. When the worker is stopped with SIGTERM (a stage timeout, a pause,
a cancel) its handler kills every registered group and exits at once, so no
tool runs on as an orphan. On Linux the tool's leader also gets a parent-death
signal, for the case where the worker is killed outright.

The registry is per process by nature (a signal handler reads it), hence a
module-level set; it holds only process-group ids of this process's children.
"""

from __future__ import annotations

import os
import signal
import threading

_groups: set[int] = set()
_lock = threading.Lock()


def register(pgid: int) -> None:
    with _lock:
        _groups.add(pgid)


def unregister(pgid: int) -> None:
    with _lock:
        _groups.discard(pgid)


def kill_all() -> None:
    """SIGKILL every registered group (safe to call from a signal handler)."""
    for pgid in list(_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def _on_sigterm(signum, frame) -> None:
    kill_all()
    os._exit(128 + signum)


def install_sigterm_handler() -> None:
    """Call in a worker process: on SIGTERM, kill the registered tools, then exit."""
    if hasattr(os, "killpg"):
        signal.signal(signal.SIGTERM, _on_sigterm)
