"""The process executor: real worker processes, real kills."""

import os
import threading
import time

import psutil
import pytest

from core.engine.executor import ProcessExecutor
from core.resilience.cancel import CancelToken
from core.resilience.errors import (Cancelled, ErrorKind, Severity, StageTimeout, StaveError, WorkerCrashed,
                                    WorkersUnavailable, classify)
from tests.core.engine import workfns


@pytest.fixture(scope="module")
def executor():
    ex = ProcessExecutor(max_workers=1, grace_s=3.0)
    yield ex
    ex.shutdown()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_runs_in_another_process(executor):
    assert executor.run(workfns.add, (2, 3), timeout_s=30) == 5
    assert executor.run(workfns.pid, (), timeout_s=30) != os.getpid()


def test_function_errors_come_back_as_they_are(executor):
    with pytest.raises(ValueError, match="bad input"):
        executor.run(workfns.raise_value_error, ("bad input",), timeout_s=30)
    with pytest.raises(TimeoutError, match="own timeout") as info:
        executor.run(workfns.raise_own_timeout, (), timeout_s=30)
    assert not isinstance(info.value, StageTimeout)


def test_hung_attempt_is_killed_at_its_timeout_and_worker_replaced(executor):
    worker = executor.run(workfns.pid, (), timeout_s=30)
    t0 = time.monotonic()
    with pytest.raises(StageTimeout) as info:
        executor.run(workfns.hang, (), timeout_s=1.0)
    assert time.monotonic() - t0 < 1.0 + executor.grace_s
    assert classify(info.value).kind is ErrorKind.TIMEOUT
    # the pool still works, with a new worker
    new_worker = executor.run(workfns.pid, (), timeout_s=30)
    assert executor.run(workfns.add, (1, 1), timeout_s=30) == 2
    deadline = time.monotonic() + 5
    while _alive(worker) and worker != new_worker and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker == new_worker or not _alive(worker)


def test_segfaulting_worker_is_reported_and_replaced(executor):
    with pytest.raises(WorkerCrashed, match="SIGSEGV") as info:
        executor.run(workfns.crash_segv, (), timeout_s=30)
    assert info.value.exitcode == -11
    assert classify(info.value).kind is ErrorKind.WORKER_CRASH
    assert executor.run(workfns.add, (2, 2), timeout_s=30) == 4


def test_os_exit_is_a_crash_with_its_code(executor):
    with pytest.raises(WorkerCrashed, match="code 3"):
        executor.run(workfns.exit_now, (3,), timeout_s=30)
    assert executor.run(workfns.add, (0, 1), timeout_s=30) == 1


def test_cancel_kills_the_running_attempt(executor):
    token = CancelToken()
    threading.Timer(0.5, token.cancel, args=("paused by user",)).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match="paused by user"):
        executor.run(workfns.hang, (), timeout_s=60, cancel=token)
    assert time.monotonic() - t0 < 5
    assert executor.run(workfns.add, (5, 5), timeout_s=30) == 10


def test_already_cancelled_token_runs_nothing(executor):
    token = CancelToken()
    token.cancel("stop")
    with pytest.raises(Cancelled):
        executor.run(workfns.add, (1, 2), timeout_s=30, cancel=token)


def test_fork_is_refused():
    with pytest.raises(ValueError, match="fork"):
        ProcessExecutor(context="fork")


def test_hung_attempt_that_ignores_sigterm_is_still_killed():
    ex = ProcessExecutor(max_workers=1, grace_s=3.0)
    try:
        worker = ex.run(workfns.pid, (), timeout_s=30)
        t0 = time.monotonic()
        with pytest.raises(StageTimeout):
            ex.run(workfns.hang_ignoring_term, (), timeout_s=1.0)
        assert time.monotonic() - t0 < 1.0 + ex.grace_s + 1
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
        assert ex.run(workfns.add, (1, 2), timeout_s=30) == 3
    finally:
        ex.shutdown()


# -- workers that cannot start ----------------------------------------------------------------
def test_workers_that_die_as_they_start_are_unavailable_not_a_crash_of_the_task():
    ex = ProcessExecutor(max_workers=1, grace_s=1.0, preload=("tests.core.engine.boot_dies",), start_timeout_s=30)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkersUnavailable) as caught:
            ex.run(workfns.add, (1, 2), timeout_s=5)
        assert time.monotonic() - t0 < 30 + 5
        info = classify(caught.value)
        # fatal: the batch pauses with this reason instead of failing or quarantining the file
        assert info.severity is Severity.FATAL and not info.retryable
        assert "start" in info.reason and "ulimit" in info.suggestion
    finally:
        ex.shutdown()


def test_a_pool_that_cannot_be_launched_is_unavailable(monkeypatch):
    ex = ProcessExecutor(max_workers=1)

    class NoPool:
        active = True

        def schedule(self, *a, **kw):
            raise OSError(11, "Resource temporarily unavailable")  # fork() failing with EAGAIN

        def stop(self):
            pass

        def join(self, timeout=None):
            pass

    pool = ex._pool = NoPool()
    monkeypatch.setattr(ex, "_get_pool", lambda: pool)
    with pytest.raises(WorkersUnavailable, match="could not be started"):
        ex.run(workfns.add, (1, 2), timeout_s=5)


class _BrokenPool:
    """A pool in pebble's ERROR state: one of its threads died (another task's doing); it refuses new tasks."""

    active = True

    def __init__(self):
        self.stopped = threading.Event()

    def schedule(self, *a, **kw):
        raise RuntimeError("Unexpected error within the Pool")

    def stop(self):
        self.stopped.set()

    def join(self, timeout=None):
        pass


def test_a_pool_found_broken_when_a_task_is_handed_over_is_replaced_and_the_task_runs():
    ex = ProcessExecutor(max_workers=1, grace_s=1.0)
    broken = ex._pool = _BrokenPool()
    try:
        assert ex.run(workfns.add, (2, 3), timeout_s=30) == 5  # on a new pool, not blamed on the task
        assert ex.rebuilds == 1 and broken.stopped.wait(5) and ex._pool is not broken
    finally:
        ex.shutdown()


def test_a_pool_that_is_broken_every_time_makes_workers_unavailable(monkeypatch):
    ex = ProcessExecutor(max_workers=1)
    made: list[_BrokenPool] = []

    def get_pool():
        with ex._lock:
            if ex._pool is None:
                ex._pool = _BrokenPool()
                made.append(ex._pool)
            return ex._pool

    monkeypatch.setattr(ex, "_get_pool", get_pool)
    with pytest.raises(WorkersUnavailable, match="broke three times"):
        ex.run(workfns.add, (1, 2), timeout_s=5)
    assert len(made) == 3 and all(p.stopped.wait(5) for p in made)


def test_a_task_whose_pool_other_tasks_keep_replacing_is_never_blamed_as_a_crash(monkeypatch):
    # Every time it is handed over, another task's timeout or crash has thrown the pool away before a worker
    # took it (more supervisors than workers make such waits common): it never ran, so this is no crash of its
    # file; a pool that cannot keep its workers pauses the batch.
    from core.engine import executor as executor_mod

    ex = ProcessExecutor(max_workers=1)
    handed = []
    monkeypatch.setattr(ex, "_schedule", lambda fn, args, timeout: handed.append(1) or (None, executor_mod._RESUBMIT))
    with pytest.raises(WorkersUnavailable, match="replaced 10 times"):
        ex.run(workfns.add, (1, 2), timeout_s=5)
    assert len(handed) == 10


def test_the_deadline_runs_from_when_a_worker_takes_the_task(monkeypatch):
    # The worker needs ~2.5 s to start; the task has 1 s. Counting from submission the watchdog would kill it;
    # counting from when a worker took it, it finishes well inside its time.
    monkeypatch.setenv("STAVE_TEST_BOOT_S", "2.5")
    ex = ProcessExecutor(max_workers=1, grace_s=0.5, preload=("tests.core.engine.boot_slow",))
    try:
        t0 = time.monotonic()
        assert ex.run(workfns.add, (2, 3), timeout_s=1.0) == 5
        assert time.monotonic() - t0 > 2.0  # it did wait for the slow start
        assert ex.rebuilds == 0
        with pytest.raises(StageTimeout):  # a task that really overruns is still stopped
            ex.run(workfns.hang, (5.0,), timeout_s=1.0)
    finally:
        ex.shutdown()


def test_start_launches_the_workers_in_the_background(monkeypatch):
    monkeypatch.setenv("STAVE_TEST_BOOT_S", "2.0")
    ex = ProcessExecutor(max_workers=1, preload=("tests.core.engine.boot_slow",))
    try:
        t0 = time.monotonic()
        ex.start()
        assert time.monotonic() - t0 < 1.5  # it did not wait for the 2 s start
        time.sleep(3.0)  # meanwhile the worker started and imported its modules
        t1 = time.monotonic()
        assert ex.run(workfns.add, (4, 5), timeout_s=30) == 9
        assert time.monotonic() - t1 < 1.5  # no 2 s start left to pay
    finally:
        ex.shutdown()


def test_start_never_raises_when_the_pool_cannot_launch(monkeypatch):
    ex = ProcessExecutor(max_workers=1)

    def broken():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(ex, "_get_pool", broken)
    ex.start()  # the first real task reports it


def test_a_task_that_breaks_the_pool_is_a_crash_of_that_task_not_fatal():
    # An exception that cannot be unpickled in the supervisor breaks pebble's pool: the task that ran is
    # reported as a worker crash (it counts toward its file's quarantine), never as "no worker can start".
    ex = ProcessExecutor(max_workers=1, grace_s=1.0)
    try:
        with pytest.raises(WorkerCrashed):
            ex.run(workfns.raise_unpicklable, (), timeout_s=30)
        assert ex.run(workfns.add, (1, 1), timeout_s=30) == 2  # a new pool serves the next task
    finally:
        ex.shutdown()


def test_stage_exceptions_that_cannot_cross_processes_arrive_classified(executor):
    from core.engine.stagegraph import StageContext, run_stage_in_worker

    ctx = StageContext(job_id=1, stage="process", input_path="/x.wav", out_dir="/tmp", work_dir="/tmp",
                       song_id="x", config={})
    with pytest.raises(StaveError) as caught:
        executor.run(run_stage_in_worker, ("tests.core.engine.workfns:stage_raising_unpicklable", ctx),
                     timeout_s=30)
    assert "answered 503" in str(caught.value)
    assert executor.run(workfns.add, (2, 2), timeout_s=30) == 4  # and the pool was never broken


def test_a_pool_broken_while_idle_is_stopped_before_it_is_replaced():
    # One idle worker killed: pebble marks the pool broken; the replacement must not leave the other worker running.
    ex = ProcessExecutor(max_workers=2, grace_s=1.0)
    try:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:  # two tasks at once land on both workers
            results = []
            threads = [threading.Thread(target=lambda: results.append(ex.run(workfns.hang_then_pid, (0.5,),
                                                                             timeout_s=30))) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            pids |= set(results)
        assert len(pids) == 2
        victim, other = sorted(pids)
        os.kill(victim, 9)
        time.sleep(1.0)  # pebble notices the dead idle worker and breaks the pool
        assert ex.run(workfns.add, (1, 2), timeout_s=30) == 3
        deadline = time.monotonic() + 15
        while _alive(other) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(other)
    finally:
        ex.shutdown()


def test_every_worker_warms_up_as_it_starts(tmp_path):
    # Two workers, each warming itself before its first task, whichever tasks they get.
    ex = ProcessExecutor(max_workers=2, grace_s=1.0, warm_start=("tests.core.engine.workfns:note_start", str(tmp_path)))
    try:
        ex.start()
        first = {ex.run(workfns.pid, (), timeout_s=30) for _ in range(4)}
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("warm-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the second worker may have started after the first took every task
        warmed = {int(p.name.split("-")[1]) for p in tmp_path.glob("warm-*")}
        assert len(warmed) == 2 and first <= warmed
    finally:
        ex.shutdown()


def test_a_replacement_worker_warms_up_with_what_set_warm_start_says_now(tmp_path):
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    ex = ProcessExecutor(max_workers=1, grace_s=1.0, warm_start=("tests.core.engine.workfns:note_start", str(first)))
    try:
        pid = ex.run(workfns.pid, (), timeout_s=30)
        assert (first / f"warm-{pid}").exists()
        ex.set_warm_start(("tests.core.engine.workfns:note_start", str(later)))
        with pytest.raises(WorkerCrashed):
            ex.run(workfns.crash_segv, (), timeout_s=30)
        replacement = ex.run(workfns.pid, (), timeout_s=30)
        assert replacement != pid and (later / f"warm-{replacement}").exists()  # warmed before it ran anything
        assert [p.name for p in first.iterdir()] == [f"warm-{pid}"]
    finally:
        ex.shutdown()


def test_a_failing_start_up_warm_does_not_keep_the_worker_from_working():
    ex = ProcessExecutor(max_workers=1, grace_s=1.0, warm_start=("tests.core.engine.workfns:fail_start", None))
    try:
        assert ex.run(workfns.add, (2, 2), timeout_s=30) == 4
        assert ex.rebuilds == 0
    finally:
        ex.shutdown()


def test_on_start_is_called_once_when_a_worker_takes_the_task_even_a_quick_one(executor):
    calls = []
    assert executor.run(workfns.add, (1, 2), timeout_s=30, on_start=lambda: calls.append("quick"),
                        on_wait=lambda: calls.append("waited with a worker free")) == 3
    assert executor.run(workfns.hang, (0.3,), timeout_s=30, on_start=lambda: calls.append("slow")) == "woke"
    with pytest.raises(ValueError):
        executor.run(workfns.raise_value_error, ("bad",), timeout_s=30, on_start=lambda: calls.append("raised"))
    assert calls == ["quick", "slow", "raised"]


def test_on_start_waits_for_a_free_worker_and_its_failure_never_fails_the_task(executor):
    token = CancelToken()
    started = threading.Event()
    waited, told_to_wait = [], []

    def blocker():  # keeps the only worker busy
        executor.run(workfns.hang, (1.5,), timeout_s=30, on_start=started.set)

    t = threading.Thread(target=blocker)
    t.start()
    assert started.wait(30)
    t0 = time.monotonic()

    def second_started():
        waited.append(time.monotonic() - t0)
        raise RuntimeError("an observer's bug")

    def second_waits():
        told_to_wait.append(time.monotonic() - t0)
        raise RuntimeError("another observer's bug")

    assert executor.run(workfns.add, (2, 2), timeout_s=30, on_start=second_started, on_wait=second_waits) == 4
    t.join()
    assert len(waited) == 1 and waited[0] > 0.8  # called when the worker took it, not when it was handed over
    assert len(told_to_wait) == 1 and told_to_wait[0] < 0.5  # said at once: the only worker was busy
    token.cancel("never ran")
    never = []
    with pytest.raises(Cancelled):
        executor.run(workfns.add, (1, 1), timeout_s=30, cancel=token, on_start=lambda: never.append(1))
    assert never == []
