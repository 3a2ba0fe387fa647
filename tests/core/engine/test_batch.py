"""The engine end to end over a small stage graph, with real worker processes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from core.engine import events as ev
from core.engine.batch import Engine, EngineOptions, Pipeline
from core.engine.executor import ProcessExecutor
from core.engine.store_rows import BatchStatus, JobStatus
from core.resilience.breaker import BreakerConfig
from core.resilience.retry import RetryConfig
from core.resilience.errors import ErrorKind, info_for
from tests.core.engine import teststages


@pytest.fixture(scope="module")
def executor():
    ex = ProcessExecutor(max_workers=2, grace_s=2.0)
    yield ex
    ex.shutdown()


def _wav(folder, name, seed=0):
    rng = np.random.default_rng(seed)
    path = folder / name
    sf.write(path, (rng.standard_normal(800) * 0.1).astype(np.float32), 8000)
    return path


def _inputs(tmp_path, n: int, prefix: str = "take"):
    """A folder of ``n`` small WAV files named ``<prefix><i>.wav``."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        _wav(folder, f"{prefix}{i}.wav", seed=i)
    return folder


def _engine(out, executor, clock, *, threshold=2, **opts):
    options = EngineOptions(workers=2, retry=RetryConfig(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02),
                            breaker=BreakerConfig(failure_threshold=threshold, cooldown_s=60), **opts)
    bus = ev.EventBus()
    events: list = []
    bus.subscribe(events.append)
    engine = Engine(out, teststages.pipeline(), options, bus=bus, clock=clock, executor=executor)
    return engine, events


def test_good_files_run_to_the_end(tmp_path, executor, clock):
    inputs = _inputs(tmp_path, 3)
    with _engine(tmp_path / "out", executor, clock)[0] as engine:
        added = engine.add_paths([inputs], {"x": 1})
        summary = engine.run(added.batch_id)
        assert summary.status is BatchStatus.FINISHED
        assert summary.counts["done"] == 3 and summary.failed == []
        for job in engine.store.jobs(added.batch_id):
            data = json.loads((tmp_path / "out" / job.song_id / "summary.json").read_text())
            assert data["backend"] == "tool"
            assert data["stages"] == {"ingest": "done", "process": "done"}


def test_a_bad_file_fails_alone_with_its_reason(tmp_path, executor, clock):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _wav(inputs, "a.wav", 1)
    _wav(inputs, "bad_b.wav", 2)
    _wav(inputs, "c.wav", 3)
    engine, events = _engine(tmp_path / "out", executor, clock)
    with engine:
        added = engine.add_paths([inputs], {})
        summary = engine.run(added.batch_id)
        assert summary.counts["done"] == 2 and summary.counts["failed"] == 1
        [failed] = summary.failed
        assert failed["path"].endswith("bad_b.wav")
        assert failed["kind"] == "input-corrupt" and "not audio" in failed["reason"]
        # an input error is never retried
        bad = [j for j in engine.store.jobs(added.batch_id) if j.status is JobStatus.FAILED][0]
        assert len(engine.store.attempt_log(bad.id, "process")) == 1
    assert not any(isinstance(e, ev.StageRetrying) for e in events)


def test_flaky_tool_is_recovered_by_retries(tmp_path, executor, clock):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _wav(inputs, "flaky_x.wav")
    engine, events = _engine(tmp_path / "out", executor, clock, threshold=5)
    with engine:
        added = engine.add_paths([inputs], {})
        summary = engine.run(added.batch_id)
        assert summary.counts["done"] == 1
        job = engine.store.jobs(added.batch_id)[0]
        outcomes = [a.outcome.value for a in engine.store.attempt_log(job.id, "process")]
        assert outcomes == ["failed", "failed", "done"]
    retries = [e for e in events if isinstance(e, ev.StageRetrying)]
    assert [r.attempt for r in retries] == [1, 2]


def test_hung_stage_is_killed_retried_then_quarantined(tmp_path, executor, clock):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _wav(inputs, "hang_me.wav")
    _wav(inputs, "fine.wav", 5)
    engine, _ = _engine(tmp_path / "out", executor, clock, max_crashes=2)
    with engine:
        added = engine.add_paths([inputs], {"stage_timeouts": {"process": 1.0}})
        summary = engine.run(added.batch_id)
        assert summary.counts["done"] == 1
        assert summary.counts["quarantined"] == 1
        [failed] = summary.failed
        assert failed["path"].endswith("hang_me.wav") and "timed out" in failed["reason"]
        hung = [j for j in engine.store.jobs(added.batch_id) if j.status is JobStatus.QUARANTINED][0]
        assert failed["kind"] == "timeout"
        # the tool timed out twice (its budget on this file), then the fallback hung twice too
        assert [a.error_kind.value for a in engine.store.attempt_log(hung.id, "process")] == ["timeout"] * 4
        assert hung.crash_count == 4


def test_crashing_worker_is_replaced_and_the_batch_goes_on(tmp_path, executor, clock):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _wav(inputs, "crash_me.wav")
    _wav(inputs, "fine.wav", 5)
    with _engine(tmp_path / "out", executor, clock)[0] as engine:
        added = engine.add_paths([inputs], {})
        summary = engine.run(added.batch_id)
        assert summary.counts["done"] == 1 and summary.counts["quarantined"] == 1
        assert "SIGSEGV" in summary.failed[0]["reason"]


def test_failing_tool_opens_breaker_then_fallback_then_probe_closes(tmp_path, executor, clock):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("fail")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        _wav(inputs, f"s{i}.wav", seed=i)
    # one job at a time, so the story is exact: with a job in flight beside the probe, that job would (rightly)
    # take the fallback while the half-open breaker waits for its probe
    engine, events = _engine(out, executor, clock, extra_supervisors=0)
    with engine:
        added = engine.add_paths([inputs], {})
        summary = engine.run(added.batch_id, workers=1)
        assert summary.counts["done"] == 4
        assert len(summary.degraded) == 4  # every file took the fallback
        assert engine.breakers.get("tool").snapshot().state.value == "open"
        tool_attempts = sum(len([a for a in engine.store.attempt_log(j.id, "process")])
                            for j in engine.store.jobs(added.batch_id))
        # 2 failures opened the breaker (3 attempts on the first file), then no more tool calls
        assert tool_attempts <= 4 + 4  # each job has at most its builtin attempt after the breaker opened
        opened = [e for e in events if isinstance(e, ev.BreakerChanged) and e.new == "open"]
        assert opened

        # the tool works again; after the cooldown a probe closes the breaker
        (out / "tool_mode").write_text("ok")
        clock.advance(61)
        n = engine.rerun_degraded(added.batch_id)
        assert n == 4
        summary = engine.run(added.batch_id, workers=1)
        assert summary.counts["done"] == 4 and summary.degraded == []
        assert engine.breakers.get("tool").snapshot().state.value == "closed"


def test_pause_then_resume_does_not_redo_finished_stages(tmp_path, executor, clock):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        _wav(inputs, f"f{i}.wav", seed=i)
    engine, events = _engine(tmp_path / "out", executor, clock)
    with engine:
        added = engine.add_paths([inputs], {})
        seen = []

        def pause_after_two(e):
            if isinstance(e, ev.JobFinished):
                seen.append(e)
                if len(seen) == 2:
                    engine.pause("test pause")

        unsub = engine.bus.subscribe(pause_after_two)
        summary = engine.run(added.batch_id, workers=1)
        unsub()
        assert summary.status is BatchStatus.PAUSED
        done_first = {j.id for j in engine.store.jobs(added.batch_id, JobStatus.DONE)}
        assert 2 <= len(done_first) < 6
        summary = engine.run(added.batch_id, workers=2)
        assert summary.status is BatchStatus.FINISHED and summary.counts["done"] == 6
        for job_id in done_first:
            log = engine.store.attempt_log(job_id)
            assert [a.stage for a in log] == ["ingest", "process", "export"]  # nothing done twice


def test_jobs_a_pause_interrupts_go_back_to_the_queue_and_say_so(tmp_path, executor, clock):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("hang")  # "process" hangs until the pause kills it
    inputs = _inputs(tmp_path, 4)
    engine, events = _engine(out, executor, clock)
    with engine:
        added = engine.add_paths([inputs], {})
        in_process: set[int] = set()

        def pause_when_both_workers_hang(e):
            if isinstance(e, ev.StageStarted) and e.stage == "process":
                in_process.add(e.job_id)
                if len(in_process) == 2:
                    engine.pause("test pause")

        engine.bus.subscribe(pause_when_both_workers_hang)
        summary = engine.run(added.batch_id)
        assert summary.status is BatchStatus.PAUSED and summary.counts["pending"] == 4
        started = {e.job_id for e in events if isinstance(e, ev.JobStarted)}
        requeued = [e for e in events if isinstance(e, ev.JobQueued) and e.reason]
        assert len(started) >= 2  # the two hanging, and any whose earlier stage a worker ran meanwhile
        assert started <= {e.job_id for e in requeued} and len(requeued) == len({e.job_id for e in requeued})
        assert all("test pause" in e.reason and e.batch_id == added.batch_id for e in requeued)
        assert not [e for e in events if isinstance(e, (ev.JobFailed, ev.JobCancelled))]


def test_cancelled_jobs_say_so(tmp_path, executor, clock):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("hang")
    inputs = _inputs(tmp_path, 5)
    engine, events = _engine(out, executor, clock)
    with engine:
        added = engine.add_paths([inputs], {})
        jobs = [j.id for j in engine.store.jobs(added.batch_id)]
        state = {"cancelled_one": None}

        def cancel(e):
            if isinstance(e, ev.StageStarted) and e.stage == "process":
                if state["cancelled_one"] is None:
                    state["cancelled_one"] = e.job_id
                    engine.cancel_job(e.job_id)  # one running job, on its own
                    engine.cancel_job(jobs[-1])  # one still waiting in the queue
                else:
                    engine.cancel()  # then the whole batch

        engine.bus.subscribe(cancel)
        summary = engine.run(added.batch_id)
        assert summary.status is BatchStatus.CANCELLED
        cancelled = {e.job_id for e in events if isinstance(e, ev.JobCancelled)}
        in_store = {j.id for j in engine.store.jobs(added.batch_id, JobStatus.CANCELLED)}
        assert cancelled == in_store == set(jobs)  # every job: each announced exactly as the store has it
        assert len([e for e in events if isinstance(e, ev.JobCancelled)]) == len(jobs)


def test_a_second_engine_on_the_same_folder_is_refused(tmp_path, executor, clock):
    from core.engine.store import StoreError

    engine, _ = _engine(tmp_path / "out", executor, clock)
    with engine:
        with pytest.raises(StoreError, match="another Stave"):
            _engine(tmp_path / "out", executor, clock)
    # released on close: a new engine can open it
    with _engine(tmp_path / "out", executor, clock)[0]:
        pass


def test_a_stage_run_again_resets_every_later_stage_first(tmp_path, executor, clock):
    """A re-run stage must not leave later stages looking valid over its new outputs."""
    from core.engine.batch import Pipeline
    from core.engine.stagegraph import StageSpec
    from core.engine.store_rows import StageStatus

    inputs = tmp_path / "in"
    inputs.mkdir()
    _wav(inputs, "a.wav")
    out = tmp_path / "out"
    with _engine(out, executor, clock)[0] as engine:
        batch = engine.add_paths([inputs], {}).batch_id
        assert engine.run(batch).counts["done"] == 1
    # a new version of "process" that fails on every file (an input error: no retry, no fallback)
    stages = (teststages.STAGES[0],
              StageSpec("process", "2", "tests.core.engine.teststages:process_rejects"),
              teststages.STAGES[2])
    pipeline = Pipeline(stages, config_to_dict=dict, fingerprint=teststages.pipeline().fingerprint)
    engine = Engine(out, pipeline, EngineOptions(workers=1), clock=clock, executor=executor)
    with engine:
        job = engine.store.jobs(batch)[0]
        engine.store.reset_job(job.id)
        summary = engine.run(batch)
        assert summary.counts["failed"] == 1
        assert engine.store.stage_row(job.id, "ingest").status is StageStatus.DONE
        assert engine.store.stage_row(job.id, "process").status is StageStatus.FAILED
        assert engine.store.stage_row(job.id, "export").status is StageStatus.PENDING  # reset, not left "done"


def test_late_supervisor_does_not_finish_twice(tmp_path, executor, clock):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _wav(inputs, "a.wav")
    engine, events = _engine(tmp_path / "out", executor, clock)
    with engine:
        batch = engine.add_paths([inputs], {}).batch_id
        run = engine.start(batch)
        run.work()
        assert run.finished.is_set()
        run.work()  # a supervisor that started late
    assert len([e for e in events if isinstance(e, ev.BatchFinished)]) == 1


def test_paused_batch_is_not_a_success():
    from core.commands.report import exit_code
    from core.engine.batch import BatchSummary

    paused = BatchSummary(1, BatchStatus.PAUSED, {"pending": 3, "done": 1}, [], [], 1.0, "Ctrl-C")
    finished = BatchSummary(1, BatchStatus.FINISHED, {"done": 4}, [], [], 1.0)
    assert exit_code(paused) == 1 and exit_code(finished) == 0


@pytest.mark.parametrize("warm_up", ["", "tests.core.engine.workfns:noop"])
def test_workers_that_cannot_start_pause_the_batch_and_blame_no_file(tmp_path, clock, warm_up):
    inputs = _inputs(tmp_path, 3)
    base = teststages.pipeline()
    pipeline = Pipeline(base.stages, base.config_to_dict, base.fingerprint, warm_up=warm_up,
                        preload=("tests.core.engine.boot_dies",))
    executor = ProcessExecutor(max_workers=1, grace_s=1.0, preload=pipeline.preload, start_timeout_s=30)
    try:
        with Engine(tmp_path / "out", pipeline, EngineOptions(workers=1), clock=clock, executor=executor) as engine:
            added = engine.add_paths([inputs], {"x": 1})
            summary = engine.run(added.batch_id)
            assert summary.status is BatchStatus.PAUSED
            assert "could not" in summary.pause_reason or "start" in summary.pause_reason
            assert summary.failed == []
            jobs = engine.store.jobs(added.batch_id)
            assert {j.status for j in jobs} == {JobStatus.PENDING}  # all still to do when workers can start
            assert all(j.crash_count == 0 for j in jobs)
    finally:
        executor.shutdown()


def test_a_batch_killed_between_two_jobs_runs_again_as_a_resume(tmp_path, executor, clock):
    # Killed after a JobFinished and before the next job started: no job is left "running" to recover,
    # but the batch did start, so the run that finishes it is a resume.
    inputs = _inputs(tmp_path, 2)
    engine, events = _engine(tmp_path / "out", executor, clock)
    with engine:
        added = engine.add_paths([inputs], {"x": 1})
        first = added.job_ids[0]
        engine.store.set_batch_status(added.batch_id, BatchStatus.RUNNING)
        engine.store.mark_job_started(first)
        engine.store.mark_job_failed(first, info_for(ErrorKind.INPUT_CORRUPT, "cut short"))
        engine.run(added.batch_id)
    started = [e for e in events if isinstance(e, ev.BatchStarted)]
    assert len(started) == 1 and started[0].resumed is True


def test_a_new_batch_is_not_a_resume(tmp_path, executor, clock):
    inputs = _inputs(tmp_path, 1)
    engine, events = _engine(tmp_path / "out", executor, clock)
    with engine:
        engine.run(engine.add_paths([inputs], {"x": 1}).batch_id)
    started = [e for e in events if isinstance(e, ev.BatchStarted)]
    assert len(started) == 1 and started[0].resumed is False


def test_a_job_whose_next_stage_waits_for_the_busy_worker_is_said_to_wait(tmp_path, clock):
    """One worker, one job more in flight: the first job's "process" is ready while the other's ingest holds
    the worker (which job a worker takes first is up to the supervisors' race)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "ingest_delay").write_text("0.5")  # the second ingest still runs when the first "process" is handed over
    inputs = _inputs(tmp_path, 2)
    one = ProcessExecutor(max_workers=1, grace_s=2.0)
    try:
        engine, events = _engine(out, one, clock, extra_supervisors=1)
        with engine:
            added = engine.add_paths([inputs], {})
            assert engine.run(added.batch_id, workers=1).counts["done"] == 2
            jobs = [j.id for j in engine.store.jobs(added.batch_id)]
    finally:
        one.shutdown()
    waited = []
    for job_id in jobs:
        mine = [e for e in events if getattr(e, "job_id", None) == job_id]
        started = next(i for i, e in enumerate(mine) if isinstance(e, ev.JobStarted))
        # never said of a job still in the queue (before a worker took its first stage)
        assert not any(isinstance(e, ev.StageWaiting) for e in mine[:started])
        told = [(type(e).__name__, e.stage) for e in mine if isinstance(e, (ev.StageWaiting, ev.StageStarted))]
        if ("StageWaiting", "process") in told:  # and then a worker took it
            assert told.index(("StageWaiting", "process")) + 1 == told.index(("StageStarted", "process"))
            waited.append(job_id)
    assert waited, "no job was said to wait for the busy worker"


def test_unchanged_files_processed_again_take_their_earlier_results(tmp_path, executor, clock):
    """The same folder added again (a new batch): unchanged files run nothing and are done with the earlier
    results; a changed file, or a new configuration, runs again."""
    inputs = _inputs(tmp_path, 3)
    out = tmp_path / "out"
    engine, events = _engine(out, executor, clock)
    with engine:
        first = engine.add_paths([inputs], {"x": 1})
        assert engine.run(first.batch_id).counts["done"] == 3
        summaries = {j.song_id: (out / j.song_id / "summary.json").read_bytes()
                     for j in engine.store.jobs(first.batch_id)}
        _wav(inputs, "take2.wav", seed=99)  # one file changes
        os.utime(inputs / "take2.wav", (1, 1))
        second = engine.add_paths([inputs], {"x": 1})
        assert second.batch_id != first.batch_id
        assert engine.run(second.batch_id).counts["done"] == 3
        jobs = {os.path.basename(j.input_path): j for j in engine.store.jobs(second.batch_id)}
        for name in ("take0.wav", "take1.wav"):
            job = jobs[name]
            assert engine.store.attempt_log(job.id) == []  # nothing ran
            assert job.status is JobStatus.DONE and job.song_id in summaries
            assert (out / job.song_id / "summary.json").read_bytes() == summaries[job.song_id]
            assert {r.stage for r in engine.store.stages(job.id)} == {"ingest", "process", "export"}
        assert [a.stage for a in engine.store.attempt_log(jobs["take2.wav"].id)] == ["ingest", "process", "export"]
        reused = {e.job_id: e.reused_from_batch for e in events if isinstance(e, ev.JobFinished)}
        assert [reused[jobs[n].id] for n in ("take0.wav", "take1.wav", "take2.wav")] == [
            first.batch_id, first.batch_id, None]  # said so, for the progress line and the queue
        st = os.stat(inputs / "take1.wav")  # other bytes, same size and time (a copy that kept the time)
        _wav(inputs, "take1.wav", seed=77)
        os.utime(inputs / "take1.wav", ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.path.getsize(inputs / "take1.wav") == st.st_size
        fourth = engine.add_paths([inputs], {"x": 1})
        engine.run(fourth.batch_id)
        ran = {os.path.basename(j.input_path) for j in engine.store.jobs(fourth.batch_id)
               if engine.store.attempt_log(j.id)}
        assert ran == {"take1.wav"}
        third = engine.add_paths([inputs], {"x": 2})  # another configuration: everything runs again
        assert engine.run(third.batch_id).counts["done"] == 3
        assert all(engine.store.attempt_log(j.id) for j in engine.store.jobs(third.batch_id))
        # a job run again on purpose ("re-run from" its first stage) runs, earlier results or not
        job = engine.store.jobs(third.batch_id)[0]
        engine.rerun_from([job.id], "ingest")
        before = len(engine.store.attempt_log(job.id))
        engine.run(third.batch_id)
        assert len(engine.store.attempt_log(job.id)) > before


def test_a_reused_job_run_again_from_a_later_stage_with_kept_work_files_runs_from_its_own_start(
        tmp_path, executor, clock):
    """Adopted results name the donor's intermediates under this job's work folder, where they are not: a
    "re-run from" a later stage cannot pass the donor's files off as this job's (export then found no input)."""
    inputs = _inputs(tmp_path, 1)
    out = tmp_path / "out"
    engine, _ = _engine(out, executor, clock, keep_work_files=True)
    with engine:
        first = engine.add_paths([inputs], {})
        assert engine.run(first.batch_id).counts["done"] == 1
        second = engine.add_paths([inputs], {})
        assert engine.run(second.batch_id).counts["done"] == 1
        [job] = engine.store.jobs(second.batch_id)
        assert engine.store.attempt_log(job.id) == []  # reused
        engine.rerun_from([job.id], "export")
        summary = engine.run(second.batch_id)
        assert summary.counts["done"] == 1 and summary.failed == []
        assert [a.stage for a in engine.store.attempt_log(job.id)] == ["ingest", "process", "export"]
