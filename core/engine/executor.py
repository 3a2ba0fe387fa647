"""Where a stage attempt runs: a warm pool of worker processes with real timeouts.

``StageExecutor`` is the interface the job runner talks to; ``ProcessExecutor``
is the local implementation on pebble's ``ProcessPool`` (spawn or forkserver:
never fork, since the window runs Qt threads). A hung attempt is killed at its
deadline and its worker replaced; a crashed worker is reported as
``WorkerCrashed`` and replaced; the batch goes on.

pebble times tasks with the wall clock and has known races around cancel and
killed workers, so this class keeps its own monotonic deadline and, when a
task outlives it by a grace period without pebble noticing, rebuilds the pool
(the watchdog). The deadline runs from the moment a worker takes the task, so
a worker still importing its libraries (a replacement, say) never eats into
a stage's time.

When no worker can be started at all (the pool fails to launch, workers die
before taking a task, or none takes one within ``start_timeout_s``), the task
raises :class:`WorkersUnavailable`: fatal, so the batch pauses with that
reason instead of blaming, and quarantining, one file after another.
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Callable, Protocol

import pebble

from core.engine.owner_watch import watch_owner
from core.resilience import children
from core.resilience.cancel import CancelToken
from core.resilience.errors import Cancelled, StageTimeout, WorkerCrashed, WorkersUnavailable, one_line

log = logging.getLogger(__name__)

# Threads each worker's numeric libraries may use: workers are the parallelism.
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


class StageExecutor(Protocol):
    """Runs one picklable call somewhere else, with a timeout and a cancel token."""

    def run(self, fn: Callable[..., Any], args: tuple, *, timeout_s: float | None,
            cancel: CancelToken | None = None, on_start: Callable[[], None] | None = None,
            on_wait: Callable[[], None] | None = None) -> Any: ...

    def shutdown(self) -> None: ...


class _WarmStart:
    """What a worker calls as it starts. Mutable on purpose: pebble pickles a pool's initializer arguments
    each time it launches a worker, so a replacement started later reads the value current then."""

    __slots__ = ("spec",)

    def __init__(self, spec: tuple[str, Any] | None):
        self.spec = spec

    def __reduce__(self):
        return _WarmStart, (self.spec,)


def _worker_init(env: dict[str, str], preload: tuple[str, ...] = (), warm_start: _WarmStart | None = None,
                 owner_pid: int | None = None) -> None:
    # First: a worker ignores Ctrl-C (the supervisor decides what a Ctrl-C means), also while it imports and warms.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children.install_sigterm_handler()  # a stopped worker takes the tools it started with it
    if owner_pid is not None:  # and a worker whose Stave was killed outright ends at once, tools and all
        watch_owner(owner_pid)
    os.environ.update(env)
    for module in preload:  # pay for heavy imports when the worker starts, in parallel, not in the first stage
        try:
            importlib.import_module(module)
        except Exception as exc:  # the stage that needs it will report the problem
            log.warning("worker could not preload %s: %s", module, exc)
    if warm_start is not None and warm_start.spec is not None:  # first calls too, in every worker
        fn_path, arg = warm_start.spec
        try:
            from core.engine.stagegraph import resolve

            resolve(fn_path)(arg)
        except Exception as exc:  # the stages will report whatever is really wrong
            log.warning("worker warm-up at start failed: %s", exc)


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return ""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def default_context() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class ProcessExecutor:
    """A warm pebble ``ProcessPool`` with Stave's own deadline and watchdog."""

    def __init__(self, max_workers: int = 2, *, context: str | None = None, grace_s: float = 5.0,
                 poll_s: float = 0.05, env: dict[str, str] | None = None, preload: tuple[str, ...] = (),
                 start_timeout_s: float = 180.0, warm_start: tuple[str, Any] | None = None):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.context = context or default_context()
        if self.context == "fork":
            raise ValueError("the fork start method is unsafe beside Qt threads; use spawn or forkserver")
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s  # no worker took the task by then: the pool cannot start
        self.preload = tuple(preload)
        # ("module:function", argument) every worker calls as it starts, after its imports; see set_warm_start
        self._warm_start = _WarmStart(warm_start)
        self.env = {**_WORKER_ENV, **(env or {})}
        if "NUMBA_CACHE_DIR" not in self.env:
            from core.settings import configure_numba_cache

            # workers cache numba's compiled code in the user's cache folder, never the install folder
            self.env["NUMBA_CACHE_DIR"] = configure_numba_cache(dict(os.environ))
        self._lock = threading.Lock()
        self._pool: pebble.ProcessPool | None = None
        self._starting: concurrent.futures.Future | None = None  # the task start() scheduled
        self._taken = 0  # tasks a worker has taken that have not ended (as seen by their callers)
        self.rebuilds = 0

    # -- pool lifecycle -------------------------------------------------------
    def _get_pool(self) -> pebble.ProcessPool:
        with self._lock:
            if self._pool is None or not self._pool.active:
                if self._pool is not None:  # broken (a worker died while idle, say): its other workers must go
                    _stop_in_background(self._pool)
                self._pool = pebble.ProcessPool(
                    max_workers=self.max_workers,
                    initializer=_worker_init,
                    initargs=(self.env, self.preload, self._warm_start, os.getpid()),
                    context=multiprocessing.get_context(self.context),
                )
            return self._pool

    def set_warm_start(self, warm_start: tuple[str, Any] | None) -> None:
        """What workers started from now on (replacements included) call as they start; running ones are
        left as they are.

        It must be quick and must never block: it runs before the worker takes
        any task, inside the start timeout.
        """
        self._warm_start.spec = warm_start

    def rebuild(self, reason: str) -> None:
        """Throw the pool away (killing its workers) and start afresh on next use."""
        log.warning("rebuilding the worker pool: %s", reason)
        with self._lock:
            pool, self._pool = self._pool, None
            self.rebuilds += 1
        if pool is not None:
            _stop_in_background(pool)

    def warm_up(self) -> None:
        """Start the workers now (so the first file does not pay for it); blocks until one answers."""
        self.run(os.getpid, (), timeout_s=60)

    def start(self) -> None:
        """Start the workers in the background and return at once.

        Their interpreter start and imports (a second or two) then overlap
        whatever the caller does next (scanning, preflight, opening the store).
        A pool that cannot start is not reported here: the first real task
        raises :class:`WorkersUnavailable`.
        """
        try:
            self._starting = self._get_pool().schedule(os.getpid)  # pebble launches its workers on the first one
        except Exception as exc:  # noqa: BLE001 - reported by the first real task
            log.debug("the worker pool did not start early: %s", exc)

    def shutdown(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            # Stopped while its workers were still starting (the command found a blocker, say): let them
            # finish starting first, or the forkserver prints the traceback of a fork cut short.
            concurrent.futures.wait([starting], timeout=15)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join(timeout=10)

    # -- running ----------------------------------------------------------------
    def run(self, fn: Callable[..., Any], args: tuple, *, timeout_s: float | None,
            cancel: CancelToken | None = None, on_start: Callable[[], None] | None = None,
            on_wait: Callable[[], None] | None = None) -> Any:
        """Run ``fn(*args)`` in a worker; raise StageTimeout, WorkerCrashed, WorkersUnavailable or Cancelled.

        Exceptions raised by ``fn`` itself are re-raised as they are. If the pool
        is rebuilt (for another task) while this one waits, it is submitted again.
        ``on_start()`` is called once, in this thread, when a worker has taken
        the task (seen within ``poll_s``; at the latest just before its outcome).
        ``on_wait()`` is called once, in this thread, if the task is seen queued
        while every worker is busy with other tasks (it waits for a free one).
        """
        on_start, on_wait = _Once(on_start), _Once(on_wait)
        broken = handed_over = 0
        while True:
            outcome = self._run_once(fn, args, timeout_s, cancel, on_start, on_wait)
            if outcome is not _BROKEN and outcome is not _RESUBMIT:
                return outcome
            # It never ran, so whatever happened is not its file's doing: never a crash of this task.
            broken += outcome is _BROKEN
            handed_over += 1
            if broken >= 3:
                raise WorkersUnavailable(
                    "the worker pool broke three times before a worker took this task (workers die as they start)",
                    suggestion=_START_HELP)
            if handed_over >= _MAX_HANDOVERS:  # other tasks' timeouts and crashes keep replacing the pool
                raise WorkersUnavailable(
                    f"the worker pool was replaced {handed_over} times before a worker took this task",
                    suggestion=_START_HELP)

    def _schedule(self, fn, args, timeout):
        """Hand the task to the pool: (pool, future), or _RESUBMIT when another thread replaced the pool."""
        pool = self._get_pool()
        try:
            return pool, pool.schedule(fn, args=args, timeout=timeout)  # the first schedule starts the workers
        except (RuntimeError, OSError) as exc:
            with self._lock:
                replaced = self._pool is not pool
            if replaced:  # stopped by another thread's rebuild between _get_pool and schedule
                return pool, _RESUBMIT
            if "Unexpected error within the Pool" in str(exc):  # pebble's ERROR state: it broke (another task's doing)
                self._rebuild_if_current(pool, f"the worker pool broke: {exc}")
                return pool, _BROKEN
            self.rebuild(f"the worker pool could not start: {exc}")
            raise WorkersUnavailable(f"worker processes could not be started: {one_line(str(exc))}",
                                     suggestion=_START_HELP) from exc

    def _run_once(self, fn, args, timeout_s, cancel, on_start, on_wait):
        if cancel is not None:
            cancel.raise_if_cancelled()
        timeout = timeout_s if timeout_s and timeout_s > 0 else None
        pool, future = self._schedule(fn, args, timeout)
        if future is _RESUBMIT or future is _BROKEN:
            return future
        scheduled, started = time.monotonic(), None
        try:
            while True:
                done, _ = concurrent.futures.wait([future], timeout=self.poll_s)
                if done:
                    if not future.cancelled() and not _never_ran(future.exception(timeout=0)):
                        on_start()  # it ran (too quickly to be seen running): it started before it ended
                    try:
                        return self._result(future, timeout, cancel)
                    except BrokenProcessPool as exc:
                        self._rebuild_if_current(pool, f"the worker pool broke: {exc}")
                        if started is None and _never_ran(exc):
                            return _BROKEN  # it never ran: a worker died while idle or as it started
                        # It ran, then the pool broke under it (its result or error could not be unpickled, which
                        # pebble reports to every task): a crash that counts toward its quarantine, not fatal.
                        raise WorkerCrashed(
                            f"the worker pool broke while this task ran: {one_line(str(exc))}") from None
                now = time.monotonic()
                if started is None and future.running():  # a worker acknowledged it: its time starts now
                    started = now
                    with self._lock:
                        self._taken += 1
                    on_start()
                if cancel is not None and cancel.is_set():
                    future.cancel()  # pebble kills the worker running it
                    raise Cancelled(cancel.reason or "cancelled")
                with self._lock:
                    replaced = self._pool is not pool
                    every_worker_busy = self._taken >= self.max_workers
                if replaced:  # another task's watchdog threw this pool away: this task did nothing wrong
                    future.cancel()
                    return _RESUBMIT
                if started is None and every_worker_busy:
                    scheduled = now  # queued behind other tasks (more supervisors than workers): not a start problem
                    on_wait()
                if started is None and now - scheduled > self.start_timeout_s:
                    future.cancel()
                    self.rebuild(f"no worker took a task within {self.start_timeout_s:.0f} s")
                    raise WorkersUnavailable(f"no worker process started within {self.start_timeout_s:.0f} s",
                                             suggestion=_START_HELP)
                if started is not None and timeout is not None and now > started + timeout + self.grace_s:
                    # pebble missed its own timeout: kill everything and start a new pool.
                    future.cancel()
                    self.rebuild(f"a task outlived its {timeout:.1f} s timeout by {self.grace_s:.0f} s")
                    raise StageTimeout(f"timed out after {timeout:.1f} s; the worker pool was rebuilt")
        finally:
            if started is not None:
                with self._lock:
                    self._taken -= 1

    def _rebuild_if_current(self, pool, reason: str) -> None:
        with self._lock:
            current = self._pool is pool
        if current:  # another thread may already have replaced it
            self.rebuild(reason)

    @staticmethod
    def _result(future, timeout, cancel):
        try:
            return future.result()
        except concurrent.futures.TimeoutError as exc:
            if exc.args[:1] == ("Task timeout",):  # pebble killed it at the deadline
                raise StageTimeout(f"timed out after {timeout:.1f} s; the worker was killed and replaced") from None
            raise  # the function's own TimeoutError
        except pebble.ProcessExpired as exc:
            code = exc.exitcode
            sig = _signal_name(code)
            how = f"killed by {sig}" if sig else f"exited with code {code}"
            hint = " (possibly killed for memory)" if sig == "SIGKILL" else ""
            raise WorkerCrashed(f"worker process {how}{hint}", exitcode=code) from None
        except concurrent.futures.CancelledError:
            raise Cancelled(cancel.reason if cancel is not None and cancel.is_set() else "cancelled") from None


def _stop_in_background(pool: pebble.ProcessPool) -> None:
    pool.stop()
    threading.Thread(target=pool.join, kwargs={"timeout": 10}, daemon=True).start()


class _Once:
    """Calls ``fn`` the first time it is called; a failing callback is logged, never raised into the task."""

    def __init__(self, fn: Callable[[], None] | None):
        self._fn = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - an observer's bug must not fail the stage
                log.exception("an executor callback failed")


def _never_ran(exc: BaseException | None) -> bool:
    """The pool failed the task before any worker took it (it broke, or could not start): not an unpicklable
    result or error, which pebble reports to every task only after one ran."""
    return isinstance(exc, BrokenProcessPool) and "Unpicklable" not in str(exc)


_RESUBMIT = object()
_BROKEN = object()
_MAX_HANDOVERS = 10  # a task submitted again this often without ever running: the pool cannot keep workers
_START_HELP = ("Stave could not start its worker processes. Check free memory and the process limit (ulimit -u), "
               "and that Stave's libraries import (`stave health`); then resume the batch.")
