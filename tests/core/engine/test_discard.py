"""Finished jobs' work folders: moved aside at once, deleted in the background, never lost track of."""

from __future__ import annotations

import os
import threading

from core.engine.batch import Engine, EngineOptions
from core.engine.discard import Discarder
from core.engine.store import Store
from core.engine.store_rows import JobSpec, JobStatus
from tests.core.engine import teststages


def _folder(path, files=3, size=1 << 16):
    path.mkdir(parents=True)
    for i in range(files):
        (path / f"part{i}.npy").write_bytes(os.urandom(size))
    (path / "nested").mkdir()
    (path / "nested" / "deep.json").write_text("{}")
    return path


def test_a_discarded_folder_leaves_its_place_at_once_and_the_trash_empties(tmp_path):
    job = _folder(tmp_path / "work" / "job-7")
    gate = threading.Event()
    discarder = Discarder(tmp_path / "trash")
    real_delete = discarder._loop

    def held_loop():  # keep the deletion from happening until the caller has looked
        gate.wait(10)
        real_delete()

    discarder._loop = held_loop
    discarder.discard(job)
    assert not job.exists()  # gone from its place before any deleting happened
    [aside] = list((tmp_path / "trash").iterdir())
    assert aside.name.startswith("job-7-") and (aside / "nested" / "deep.json").exists()
    assert not discarder.drain(0.05)  # still queued
    gate.set()
    assert discarder.drain(10)
    assert list((tmp_path / "trash").iterdir()) == []


def test_a_job_rerun_at_once_writes_into_a_new_folder_that_survives(tmp_path):
    discarder = Discarder(tmp_path / "trash")
    job = tmp_path / "work" / "job-1"
    for round_ in range(20):  # the same path discarded and made again while deletions run behind it
        _folder(job, files=2)
        (job / "mine.txt").write_text(str(round_))
        discarder.discard(job)
        job.mkdir()
        (job / "mine.txt").write_text(f"new {round_}")
        assert (job / "mine.txt").read_text() == f"new {round_}"
        os.rename(job, tmp_path / f"kept-{round_}")
    assert discarder.drain(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["trash", "work", *[f"kept-{i}" for i in range(20)]])
    assert all((tmp_path / f"kept-{i}" / "mine.txt").read_text() == f"new {i}" for i in range(20))
    assert list((tmp_path / "trash").iterdir()) == []


def test_when_the_folder_cannot_be_moved_aside_it_is_deleted_in_place(tmp_path):
    (tmp_path / "trash").write_text("a file where the trash folder should be")
    job = _folder(tmp_path / "job-3")
    Discarder(tmp_path / "trash").discard(job)
    assert not job.exists()
    assert (tmp_path / "trash").read_text().startswith("a file")  # nothing else touched


def test_a_missing_folder_is_not_an_error(tmp_path):
    discarder = Discarder(tmp_path / "trash")
    discarder.discard(tmp_path / "never-made")
    assert discarder.drain(1)
    assert not (tmp_path / "trash").exists()


def test_a_symlinked_work_folder_goes_as_a_link_and_its_target_stays(tmp_path):
    target = _folder(tmp_path / "precious")
    link = tmp_path / "work" / "job-9"
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    discarder = Discarder(tmp_path / "trash")
    discarder.discard(link)
    assert discarder.drain(10)
    assert not os.path.lexists(link) and list((tmp_path / "trash").iterdir()) == []
    assert sorted(p.name for p in target.iterdir()) == ["nested", "part0.npy", "part1.npy", "part2.npy"]


def test_the_next_run_deletes_what_a_crash_left_and_keeps_what_resume_needs(tmp_path, clock):
    """Killed after a job was recorded done but before its folder went, or with the trash half emptied."""
    out = tmp_path / "out"
    with Store.open(out) as store:
        batch_id = store.create_batch({"pipeline": {}}, [str(tmp_path)])
        done, degraded, pending = store.add_jobs(batch_id, [
            JobSpec(input_path=str(tmp_path / f"{name}.wav"), song_id=name) for name in ("a", "b", "c")])
        for job_id in (done, degraded):
            store.mark_job_started(job_id)
        store.mark_job_finished(done)
        store.mark_job_finished(degraded, degraded_reasons=["separate: the fallback was used"])
    work = out / ".stave" / "work"
    for job_id in (done, degraded, pending, 999):  # 999: no such job in this store, not ours to judge
        _folder(work / f"job-{job_id}", files=1)
    _folder(out / ".stave" / "trash" / f"job-{done}-0123456789ab", files=1)
    (work / "notes.txt").write_text("not a job folder")

    with Engine(out, teststages.pipeline(), EngineOptions(workers=1), clock=clock) as engine:
        run = engine.start(batch_id)
        assert run.discarder.drain(10)
        assert sorted(p.name for p in work.iterdir()) == sorted(
            [f"job-{degraded}", f"job-{pending}", "job-999", "notes.txt"])
        assert list((out / ".stave" / "trash").iterdir()) == []
        assert engine.store.job(pending).status is JobStatus.PENDING


def test_keep_work_files_keeps_finished_jobs_folders(tmp_path, clock):
    out = tmp_path / "out"
    with Store.open(out) as store:
        batch_id = store.create_batch({"pipeline": {}}, [str(tmp_path)])
        [done] = store.add_jobs(batch_id, [JobSpec(input_path=str(tmp_path / "a.wav"), song_id="a")])
        store.mark_job_started(done)
        store.mark_job_finished(done)
    _folder(out / ".stave" / "work" / f"job-{done}", files=1)
    with Engine(out, teststages.pipeline(), EngineOptions(workers=1, keep_work_files=True), clock=clock) as engine:
        run = engine.start(batch_id)
        assert run.discarder.drain(10)
        assert (out / ".stave" / "work" / f"job-{done}" / "part0.npy").exists()
