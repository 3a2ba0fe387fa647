"""Helpers for the error and cleanup tests: real audio files, real failing processes.

Functions here run inside spawned worker processes too, so they stay importable
and light (no test framework imports).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np

NOBODY = 65534


def sine(seconds: float = 0.5, sr: int = 8000) -> "np.ndarray":
    import numpy as np

    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def write_audio(path: Path, seconds: float = 0.5, sr: int = 8000) -> Path:
    import soundfile as sf

    sf.write(str(path), sine(seconds, sr), sr)
    return path


def truncated_copy(src: Path, dst: Path, keep_bytes: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep_bytes])
    return dst


def raised(fn: Callable[..., Any], *args: Any, **kw: Any) -> BaseException:
    """Call ``fn`` and return the exception it raised (AssertionError if none)."""
    try:
        fn(*args, **kw)
    except BaseException as exc:  # noqa: BLE001 - that is the point
        return exc
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise")


# --- run inside worker processes ------------------------------------------------


def kill_self(signum: int) -> None:
    """Die by ``signum`` without leaving a core file."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signum)
    time.sleep(10)


def read_audio(path: str) -> int:
    import soundfile as sf

    return len(sf.read(path)[0])


def run_program(name: str) -> int:
    return subprocess.run([name], check=False).returncode


# --- dropping privileges -----------------------------------------------------------


def run_unprivileged(fn: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Run ``fn`` in a forked child as user ``nobody``; return its JSON-able result.

    Only for root (chmod does not stop root). The child execs nothing (the
    interpreter may be unreachable for ``nobody``); it reports through a pipe.
    """
    assert os.geteuid() == 0, "run_unprivileged needs root"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = json.dumps({"ok": fn()})
        except BaseException:  # noqa: BLE001
            payload = json.dumps({"error": traceback.format_exc()})
            code = 1
        try:
            os.write(write_fd, payload.encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout_s
    with os.fdopen(read_fd, "rb") as reader:
        chunks.append(reader.read())
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError("unprivileged child did not finish")
        time.sleep(0.01)
    result = json.loads(b"".join(chunks).decode() or "{}")
    if "error" in result:
        raise AssertionError("unprivileged child failed:\n" + result["error"])
    return result["ok"]
