"""The checkpoint store under stress: a process killed mid-write, threads and connections at once, light commits.

Real SQLite files, real SIGKILLed subprocesses, real threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.engine.store import BatchStatus, JobStatus, Outcome, Recovered, StageStatus, Store, store_path
from tests.core.engine.conftest import batch_with_jobs as _batch_with_jobs

ROOT = Path(__file__).resolve().parents[3]


_CRASHING_CHILD = r"""
import os, sys, time
from core.engine.store import Artifact, JobSpec, Store

s = Store.open(sys.argv[1])
batch = s.create_batch({"workers": 1}, ["/music"])
ids = s.add_jobs(batch, [JobSpec(f"/music/{i}.wav", f"s{i}") for i in range(20)])
for j in ids[:5]:
    s.mark_job_started(j)
    for stage in ("ingest", "analyze"):
        a = s.begin_stage_attempt(j, stage, pid=os.getpid())
        s.finish_stage(j, stage, manifest=[Artifact(f"s{j}/{stage}.npy", "0" * 64, 8)], stage_version="1",
                       fingerprint="f", attempt_id=a)
    s.mark_job_finished(j)
j = ids[5]
s.mark_job_started(j)
s.begin_stage_attempt(j, "ingest", pid=os.getpid())
s.finish_stage(j, "ingest", manifest=[], stage_version="1", fingerprint="f")
s.begin_stage_attempt(j, "analyze", pid=os.getpid())

def stuck(*args, **kwargs):  # inside finish_stage's transaction, after the stage row was set to done
    print("IN_TRANSACTION", flush=True)
    time.sleep(120)

Store._close_attempt = stuck
s.finish_stage(j, "analyze", manifest=[Artifact("s/x.npy", "1" * 64, 9)], stage_version="1", fingerprint="f")
"""


def test_a_process_killed_mid_write_leaves_a_consistent_store(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_CHILD, str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "IN_TRANSACTION", child.stderr.read()
        assert Path(f"{store_path(out)}-wal").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with Store.open(out, create=False) as s:  # opens: quick_check passed, nothing refused
        batch = s.latest_unfinished_batch()
        assert batch.status is BatchStatus.RUNNING
        jobs = s.jobs(batch.id)
        crashed = jobs[5]
        assert s.stage_row(crashed.id, "analyze").status is StageStatus.RUNNING  # the uncommitted "done" is gone
        assert s.stage_row(crashed.id, "analyze").manifest == ()
        assert s.counts(batch.id)["running"] == 1 and s.counts(batch.id)["done"] == 5
        assert s.recover_interrupted(batch.id) == Recovered(jobs=1, stages=1, attempts=1)
        assert s.counts(batch.id) == {**{k: 0 for k in s.counts(batch.id)}, "pending": 15, "done": 5}
        assert s.stage_row(crashed.id, "ingest").status is StageStatus.DONE  # committed work survives
        assert s.stage_row(crashed.id, "analyze").status is StageStatus.PENDING
        log = s.attempt_log(crashed.id, "analyze")
        assert [a.outcome for a in log] == [Outcome.INTERRUPTED] and log[0].worker_pid == child.pid
        for job in jobs[:5]:  # every "done" row has its attempt closed as done: they were one transaction
            for row in s.stages(job.id):
                assert row.status is StageStatus.DONE and len(row.manifest) == 1
                assert [a.outcome for a in s.attempt_log(job.id, row.stage)] == [Outcome.DONE]
        assert s.get_batch(batch.id).status is BatchStatus.INTERRUPTED


# --- concurrency ---------------------------------------------------------------------
def _hammer(store: Store, job_id: int, rounds: int, errors: list) -> None:
    try:
        for i in range(rounds):
            stage = f"stage{i % 5}"
            store.begin_stage_attempt(job_id, stage)
            store.finish_stage(job_id, stage, manifest=[], stage_version="1", fingerprint=str(i))
            store.record_duration(stage, 0.01 * i)
            store.counts(store.job(job_id).batch_id)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_threads_sharing_one_store_serialize(store):
    batch, ids = _batch_with_jobs(store, 6)
    errors: list = []
    threads = [threading.Thread(target=_hammer, args=(store, j, 20, errors)) for j in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(len(store.attempt_log(j)) for j in ids) == 6 * 20
    assert all(r.status is StageStatus.DONE for j in ids for r in store.stages(j))


def test_separate_connections_wait_instead_of_failing(tmp_path):
    with Store.open(tmp_path) as first:
        batch, ids = _batch_with_jobs(first, 4)
    stores = [Store.open(tmp_path, create=False) for _ in ids]
    errors: list = []
    threads = [threading.Thread(target=_hammer, args=(s, j, 15, errors)) for s, j in zip(stores, ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert errors == []  # no "database is locked"
    with Store.open(tmp_path, create=False) as s:
        assert sum(len(s.attempt_log(j)) for j in ids) == 4 * 15


# -- light commits -----------------------------------------------------------------------------
class _SyncLog:
    """Records the synchronous level at every COMMIT of a connection (via its trace callback)."""

    def __init__(self, store: Store):
        self.commits: list[int] = []
        self._conn = store._connection()
        self._conn.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            self.commits.append(self._level())

    def _level(self) -> int:
        self._conn.set_trace_callback(None)
        try:
            return self._conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            self._conn.set_trace_callback(self._trace)


FULL, NORMAL = 2, 1


def test_bookkeeping_is_light_and_results_are_fsynced(store):
    batch, (job, *_) = _batch_with_jobs(store, 1)
    sync = _SyncLog(store)
    store.mark_job_started(job)
    attempt = store.begin_stage_attempt(job, "ingest")
    store.skip_stage(job, "separate", "off")
    store.record_duration("ingest", 1.0, 10.0)
    assert sync.commits == [NORMAL] * 4
    store.finish_stage(job, "ingest", manifest=[], stage_version="1", fingerprint="f", elapsed_s=1.0,
                       attempt_id=attempt)
    store.mark_job_finished(job)
    assert sync.commits[4:] == [FULL, FULL]
    # light writes inside a transaction share its fsynced commit
    with store.transaction():
        store.begin_stage_attempt(job, "analyze")
        store.record_duration("analyze", 1.0, 10.0)
    assert sync.commits[6:] == [FULL]


def test_after_a_failed_light_commit_the_next_result_is_still_fsynced(store):
    batch, (job, *_) = _batch_with_jobs(store, 1)
    with pytest.raises(KeyError):
        store._update_job(job + 999, "attempts = attempts + 1", (), durable=False)
    assert store.job(job).attempts == 0
    sync = _SyncLog(store)
    store.mark_job_finished(job)
    assert sync.commits == [FULL]


def test_without_wal_every_commit_is_fsynced(store):
    store._wal = False  # as on a file system without shared memory, where SQLite falls back to a journal
    batch, (job, *_) = _batch_with_jobs(store, 1)
    sync = _SyncLog(store)
    store.mark_job_started(job)
    store.begin_stage_attempt(job, "ingest")
    assert sync.commits == [FULL, FULL]


def test_light_commits_survive_the_process_being_killed(tmp_path):
    # A light commit is not fsynced, but it is committed: a killed Stave (not a power cut) never loses it.
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from core.engine.store import Store, JobSpec\n"
        "s = Store.open(sys.argv[1])\n"
        "b = s.create_batch({}, ['/m'])\n"
        "(j,) = s.add_jobs(b, [JobSpec('/m/a.wav', 'a-1234abcd')])\n"
        "s.mark_job_started(j)\n"
        "s.begin_stage_attempt(j, 'ingest')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", script, str(out)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with Store.open(out, create=False) as s:
        (job,) = s.jobs(s.list_batches()[0].id)
        assert job.status is JobStatus.RUNNING and job.attempts == 1
        assert s.stage_row(job.id, "ingest").status is StageStatus.RUNNING
