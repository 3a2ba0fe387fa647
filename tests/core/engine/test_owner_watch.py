"""Workers end when the Stave process that owns them is killed outright (their parent, the fork server, does
not: without the watch a worker went on with its stage beside the `stave resume` that redid it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[3]

OWNER = textwrap.dedent("""
    import os, sys, threading, time
    import psutil
    from core.engine.executor import ProcessExecutor
    from tests.core.engine import workfns

    def main():
        ex = ProcessExecutor(max_workers=1)
        threading.Thread(target=lambda: ex.run(workfns.hang, (600,), timeout_s=900), daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tree = psutil.Process().children(recursive=True)
            busy = [p for p in tree if p.ppid() != os.getpid()]  # a worker (its parent is the fork server)
            if busy and ex._taken:
                print(" ".join(str(p.pid) for p in tree), flush=True)
                break
            time.sleep(0.1)
        time.sleep(600)

    if __name__ == "__main__":
        main()
""")


def _gone(pids: list[int], within_s: float) -> list[int]:
    """The pids still running (not zombies) after waiting up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_a_busy_worker_and_its_fork_server_end_when_their_owner_is_killed(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    tree: list[int] = []
    try:
        line = owner.stdout.readline()
        assert line.strip(), "the owner never saw its worker take the task"
        tree = [int(p) for p in line.split()]
        assert len(tree) >= 2  # the fork server (or the worker's own parent) and the worker, at least
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert _gone(tree, within_s=10) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        owner.stdout.close()
        for pid in _gone(tree, 0):  # what a failure left behind
            os.kill(pid, signal.SIGKILL)


def test_a_worker_of_a_live_owner_is_left_alone(tmp_path):
    from core.engine.executor import ProcessExecutor
    from tests.core.engine import workfns

    ex = ProcessExecutor(max_workers=1)
    try:
        first = ex.run(workfns.pid, (), timeout_s=60)
        time.sleep(2.5)  # longer than the watch's poll, had it no pidfd
        assert ex.run(workfns.pid, (), timeout_s=60) == first  # the same worker: nothing ended it
    finally:
        ex.shutdown()
