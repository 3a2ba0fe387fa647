"""Functions run inside worker processes by the executor tests (importable by spawn)."""

import os
import signal
import time


def add(a, b):
    return a + b


def pid():
    return os.getpid()


def hang(seconds=3600):
    time.sleep(seconds)
    return "woke"


def hang_ignoring_term(seconds=3600):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def crash_segv():
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)


def exit_now(code=3):
    os._exit(code)


def raise_value_error(msg):
    raise ValueError(msg)


def raise_own_timeout():
    raise TimeoutError("the tool's own timeout")


def noop(*args):
    """A warm-up that does nothing."""
    return None


class TwoArgError(Exception):
    """Like urllib's HTTPError: its constructor takes arguments it does not keep in ``args``."""

    def __init__(self, url, code):
        super().__init__(f"{url} answered {code}")
        self.url, self.code = url, code


def raise_unpicklable(ctx=None):
    raise TwoArgError("https://example.invalid/model", 503)


def stage_raising_unpicklable(ctx):
    raise TwoArgError("https://example.invalid/model", 503)


def hang_then_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def note_start(folder):
    """A worker's start-up warm: leave a file named after this process in ``folder``."""
    with open(os.path.join(folder, f"warm-{os.getpid()}"), "w") as f:
        f.write(str(time.time()))


def fail_start(_arg):
    raise RuntimeError("this library will not load")
