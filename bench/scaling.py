"""How the engine scales with workers, what its policies and store cost, and how fast a finished batch resumes.

    python bench/scaling.py            # 12 synthesized 60 s songs, 1,000-job resume (a few minutes)
    python bench/scaling.py --quick    # 4 x 5 s songs, 100-job resume (~40 s)
    python bench/scaling.py --corpus DIR

One run measures, on the same corpus and one after another:

- the full engine (``Engine.run``: worker pool start, warm-up, every job through
  every stage with retry/breaker/timeout around each attempt, the store, the
  batch datasets at the end) with 1 and with 2 workers;
- Stave's stage functions called directly in a loop in this (warmed) process,
  and the naive librosa script (see _audio.naive_file), both on one core;
- resuming a batch of N jobs that are all done (built through the Store API
  with real song folders): ``Engine`` opened, ``run`` until ``BatchFinished``.

"jobs phase" is the time from the first ``JobStarted`` to the last
``JobFinished``: the engine without its one-off start (pool spawn + warm-up)
and end (batch datasets). Figures are printed beside their targets; nothing
is asserted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Before numpy loads: this process is one "core", like each worker (the same as _audio.ONE_THREAD_ENV).
os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"})

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench import _audio  # noqa: E402
from bench.throughput import code_line, machine_line, verdict  # noqa: E402

TARGET_TWO_WORKERS = 1.8  # 2 workers vs 1
TARGET_VS_NAIVE = 3.0  # engine with 2 workers vs the naive script on one core
TARGET_OVERHEAD = 0.03  # engine with 1 worker vs the stage functions in a loop
TARGET_RESUME_S = 2.0


# -- what two cores give right now --------------------------------------------------------------
_SPIN = ("import time, numpy as np; x = np.random.default_rng(0).standard_normal(1 << 16); t = time.perf_counter()\n"
         "for _ in range({n}): np.fft.irfft(np.fft.rfft(x))\nprint(time.perf_counter() - t)")


def cpu_ceiling(n: int = 300) -> float:
    """How many cores' worth of work two busy processes get now (2.0 on an idle 2-core machine).

    The same fixed numpy loop runs alone, then twice at once; other people's
    processes on the machine lower the figure. It bounds any 2-worker speed-up.
    """
    def spin(k: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(n=n)], stdout=subprocess.PIPE, text=True)
                 for _ in range(k)]
        return [float(p.communicate()[0]) for p in procs]

    alone = min(spin(1)[0], spin(1)[0])
    pair = spin(2)
    return sum(alone / t for t in pair)


# -- the engine -------------------------------------------------------------------------------
def run_engine(files: list[str], out: Path, workers: int) -> dict:
    """One full ``Engine.run`` over ``files`` into a new output folder; wall time and event times."""
    from core.engine import events as ev
    from core.engine.batch import Engine, EngineOptions
    from core.pipeline.config import PipelineConfig
    from core.pipeline.stages import build_pipeline

    bus = ev.EventBus()
    starts, ends = [], []
    bus.subscribe(lambda e: starts.append(time.monotonic()), ev.JobStarted)
    bus.subscribe(lambda e: ends.append(time.monotonic()), ev.JobFinished)
    t0 = time.monotonic()
    with Engine(out, build_pipeline(), EngineOptions(workers=workers), bus=bus) as engine:
        added = engine.add_paths(files, PipelineConfig())
        summary = engine.run(added.batch_id)
        t_run = time.monotonic()
    if summary.failed or summary.counts.get("done") != len(files):
        raise RuntimeError(f"engine run with {workers} worker(s) did not finish every file: {summary.counts} "
                           f"{summary.failed}")
    return {"wall_s": t_run - t0, "jobs_s": max(ends) - min(starts), "first_job_at_s": min(starts) - t0,
            "after_last_job_s": t_run - max(ends)}


def run_direct(files: list[str], out: Path, side: str) -> float:
    """The stage functions (``side="stave"``) or the naive script in a loop here; wall seconds."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        if side == "stave":
            _audio.stave_file(f, str(out), i + 1)
        else:
            _audio.naive_file(f, str(out))
    return time.perf_counter() - t0


def best(results: dict, key: str, value) -> None:
    """Keep the faster of ``results[key]`` and ``value`` (seconds, or an engine dict by its wall time)."""
    wall = (lambda v: v["wall_s"]) if isinstance(value, dict) else (lambda v: v)
    if key not in results or wall(value) < wall(results[key]):
        results[key] = value


# -- resuming a finished batch ------------------------------------------------------------------
def build_done_batch(template_song: Path, out: Path, n_jobs: int) -> int:
    """A store with ``n_jobs`` finished jobs (every stage recorded) and a song folder each; the batch id.

    The batch is left "interrupted", as after a crash, so that the engine treats the run as a resume.
    """
    from core.engine.store import Store
    from core.engine.store_manifest import artifact_for
    from core.engine.store_rows import BatchStatus, JobSpec
    from core.pipeline.config import PipelineConfig
    from core.pipeline.stages import STAGES, build_pipeline

    config = PipelineConfig().to_dict()
    pipeline = build_pipeline()
    summary = json.loads((template_song / "summary.json").read_text(encoding="utf-8"))
    song_ids = [f"song{i:05d}-{i:08x}" for i in range(n_jobs)]
    manifests = []
    for song_id in song_ids:
        dest = out / song_id
        shutil.copytree(template_song, dest)
        (dest / "summary.json").write_text(json.dumps({**summary, "song_id": song_id}), encoding="utf-8")
        manifests.append({
            "segment": [artifact_for(out, dest / "bars.parquet")],
            "export": [artifact_for(out, dest / "beats.csv"), artifact_for(out, dest / "summary.json")],
        })
    with Store.open(out) as store:
        batch_id = store.create_batch({"pipeline": config}, [str(out / "inputs")])
        specs = [JobSpec(input_path=str(out / "inputs" / f"{s}.wav"), song_id=s, audio_duration_s=60.0)
                 for s in song_ids]
        job_ids = store.add_jobs(batch_id, specs)
        with store.transaction():
            for job_id, manifest in zip(job_ids, manifests):
                store.mark_job_started(job_id)
                for spec in STAGES:
                    fp = pipeline.fingerprint(config, spec.name)
                    if not spec.is_enabled(config):
                        store.skip_stage(job_id, spec.name, spec.skip_reason, stage_version=spec.version,
                                         fingerprint=fp)
                        continue
                    attempt = store.begin_stage_attempt(job_id, spec.name)
                    store.finish_stage(job_id, spec.name, manifest=manifest.get(spec.name, []),
                                       stage_version=spec.version, fingerprint=fp, elapsed_s=0.5,
                                       attempt_id=attempt)
                store.mark_job_finished(job_id, audio_duration_s=60.0)
        store.set_batch_status(batch_id, BatchStatus.INTERRUPTED)
        store.checkpoint()
    return batch_id


def time_resume(out: Path, batch_id: int, n_jobs: int) -> dict:
    """Open the folder's engine and run the batch until ``BatchFinished``; seconds."""
    from core.engine import events as ev
    from core.engine.batch import Engine, EngineOptions
    from core.pipeline.stages import build_pipeline

    bus = ev.EventBus()
    finished: list[tuple[float, ev.BatchFinished]] = []
    bus.subscribe(lambda e: finished.append((time.monotonic(), e)), ev.BatchFinished)
    t0 = time.monotonic()
    engine = Engine(out, build_pipeline(), EngineOptions(workers=2), bus=bus, create=False)
    try:
        t_open = time.monotonic()
        engine.run(batch_id)
    finally:
        engine.close()
    if not finished or finished[0][1].status != "finished" or finished[0][1].counts.get("done") != n_jobs:
        raise RuntimeError(f"the resumed batch did not finish cleanly: {finished}")
    return {"total_s": finished[0][0] - t0, "open_s": t_open - t0, "run_s": finished[0][0] - t_open}


# -- report ------------------------------------------------------------------------------------
def report(args, n_files: int, audio_s: float, r: dict) -> None:
    p = print
    e1, e2 = r["engine1"], r["engine2"]
    x = {k: audio_s / v for k, v in (("e1", e1["wall_s"]), ("e2", e2["wall_s"]), ("direct", r["direct_s"]),
                                     ("naive", r["naive_s"]), ("e1_jobs", e1["jobs_s"]), ("e2_jobs", e2["jobs_s"]))}
    p(f"Stave engine scaling benchmark ({'--quick' if args.quick else 'full size'})")
    p(machine_line())
    p(code_line())
    p(f"corpus: {n_files} files, {audio_s:.0f} s of audio; numeric libraries on 1 thread per process; "
      f"best of {r['repeat']} round(s) for the engine and the loop\n")
    p(f"{'':52}{'wall s':>8}{'x realtime':>12}")
    rows = [("engine, 1 worker (Engine.run)", e1["wall_s"], x["e1"]),
            ("engine, 2 workers (Engine.run)", e2["wall_s"], x["e2"]),
            ("  jobs phase, 1 worker", e1["jobs_s"], x["e1_jobs"]),
            ("  jobs phase, 2 workers", e2["jobs_s"], x["e2_jobs"]),
            ("stage functions in a loop, this process (1 core)", r["direct_s"], x["direct"]),
            ("naive librosa script, this process (1 core)", r["naive_s"], x["naive"])]
    for name, wall, xr in rows:
        p(f"{name:52}{wall:8.2f}{xr:12.1f}")
    for name, eng in (("1 worker", e1), ("2 workers", e2)):
        p(f"  {name}: first job started {eng['first_job_at_s']:.1f} s after the engine opened (pool + warm-up); "
          f"{eng['after_last_job_s']:.1f} s from the last job to the end (batch datasets, shutdown)")
    speedup, jobs_speedup = x["e2"] / x["e1"], x["e2_jobs"] / x["e1_jobs"]
    vs_naive = x["e2"] / x["naive"]
    overhead = e1["wall_s"] / r["direct_s"] - 1.0
    jobs_overhead = e1["jobs_s"] / r["direct_s"] - 1.0
    res = r["resume"]
    p("\nfigure                                                   measured    target")
    if args.quick:
        p("(--quick: the corpus is seconds long, so fixed start-up costs decide these figures; run full size)")
    p(f"2 workers vs 1 worker (Engine.run)                       {speedup:7.2f}x   >= {TARGET_TWO_WORKERS}x  "
      f"{verdict(speedup, TARGET_TWO_WORKERS)}")
    p(f"  ceiling: two busy processes got {r['ceiling']:.2f} cores' worth of work at the start of this run")
    p(f"  same, jobs phase only                                  {jobs_speedup:7.2f}x")
    p(f"engine, 2 workers vs naive script on 1 core              {vs_naive:7.2f}x   >= {TARGET_VS_NAIVE:g}x    "
      f"{verdict(vs_naive, TARGET_VS_NAIVE)}")
    p(f"engine 1 worker vs stage functions in a loop (overhead)  {100 * overhead:+7.1f}%   < 3%     "
      f"{verdict(overhead, TARGET_OVERHEAD, higher_is_better=False)}")
    p(f"  same, jobs phase only                                  {100 * jobs_overhead:+7.1f}%")
    label = f"resume {res['jobs']:,} done jobs (open + run to BatchFinished)"
    p(f"{label:57}{res['total_s']:7.2f} s  < {TARGET_RESUME_S:g} s     "
      f"{verdict(res['total_s'], TARGET_RESUME_S, higher_is_better=False)}")
    p(f"  open the store {res['open_s']:.2f} s, start + run + datasets {res['run_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus and a 100-job resume")
    ap.add_argument("--corpus", help="use the audio files in this folder instead of synthesized songs")
    ap.add_argument("--songs", type=int, default=12, help="synthesized songs (full size)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each synthesized song (full size)")
    ap.add_argument("--resume-jobs", type=int, default=None, help="jobs in the resumed batch (default 1000)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="run each timed engine/loop measurement this many times and keep the best (default 2; 1 "
                         "with --quick)")
    args = ap.parse_args(argv)
    n_resume = args.resume_jobs or (100 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 2)
    if n_resume < 1 or repeat < 1 or args.songs < 1 or args.seconds < 5:
        ap.error("--resume-jobs, --repeat and --songs must be >= 1 and --seconds >= 5")
    from core.settings import configure_numba_cache

    configure_numba_cache()  # the app's cache, for this process and the engine's workers
    with tempfile.TemporaryDirectory(prefix="stave-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        say("preparing the corpus...")
        if args.corpus:
            files = [str(f) for f in _audio.audio_files(args.corpus)]
            if not files:
                raise SystemExit(f"no audio files in {args.corpus}")
            audio_s = sum(_audio.duration_of(f) for f in files)
        else:
            n, dur = (4, 5.0) if args.quick else (args.songs, args.seconds)
            files = [str(s.path) for s in _audio.make_corpus(tmp / "corpus", n, dur)]
            audio_s = n * dur
        say("measuring what two cores give right now...")
        r_ceiling = cpu_ceiling(100 if args.quick else 300)
        say("warming up (numba cache, imports)...")
        from core.pipeline.warmup import warm

        warm()  # what the engine's warm-up compiles, so neither timed engine run compiles it
        _audio.warm_up("stave", tmp / "warm")
        _audio.warm_up("naive", tmp / "warm")
        r = {}
        for i in range(repeat):  # interleaved, so a burst of load elsewhere hurts one round, not one figure
            say(f"round {i + 1}/{repeat}: stage functions in a loop, engine with 1 then 2 workers...")
            best(r, "direct_s", run_direct(files, tmp / f"out-direct{i}", "stave"))
            best(r, "engine1", run_engine(files, tmp / f"out-engine1-{i}", 1))
            best(r, "engine2", run_engine(files, tmp / f"out-engine2-{i}", 2))
        say("naive script...")
        r["naive_s"] = run_direct(files, tmp / "out-naive", "naive")
        r["repeat"], r["ceiling"] = repeat, r_ceiling
        say(f"resume of {n_resume} done jobs...")
        template = next(p.parent for p in (tmp / "out-engine1-0").glob("*/summary.json"))
        batch_id = build_done_batch(template, tmp / "out-resume", n_resume)
        r["resume"] = {"jobs": n_resume, **time_resume(tmp / "out-resume", batch_id, n_resume)}
        report(args, len(files), audio_s, r)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
