"""How the engine scales with workers, what its policies and store cost, and how fast a finished batch resumes.

    python bench/scaling.py            # 16 synthesized 3-minute songs (an album), 1,000-job resume (~6 min)
    python bench/scaling.py --quick    # 4 x 5 s songs, 100-job resume (~1 min)
    python bench/scaling.py --corpus DIR

One run measures, on the same corpus and one after another:

- the full engine (``Engine.run``: worker pool start, warm-up, every job through
  every stage with retry/breaker/timeout around each attempt, the store, the
  batch datasets at the end) with 1 and with 2 workers, in this process;
- Stave's stage functions called directly in a loop in this (warm) process,
  and split over two plain warm processes (what two cores give this workload
  with no engine at all: the ceiling for any 2-worker speed-up);
- from a standing start, each in a fresh process: ``stave process --workers 1``
  and a script that calls the same stage functions in a loop (both pay for the
  interpreter, imports and first calls once: the engine's cost is the rest);
- the naive librosa script (see _audio.naive_file) on one core;
- resuming a batch of N jobs that are all done (built through the Store API
  with real song folders): ``Engine`` opened, ``run`` until ``BatchFinished``.

"jobs phase" is the time from the first ``JobStarted`` to the last
``JobFinished``: the engine's steady state, without its one-off start (pool
spawn + warm-up) and end (batch datasets). Figures are printed beside their
targets; nothing is asserted.
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
import statistics  # noqa: E402
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


# Runs in a fresh interpreter: the stage functions in a loop, as a person's script would call them.
_LOOP_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from bench import _audio
files, out = json.loads(sys.argv[1]), sys.argv[2]
for i, f in enumerate(files):
    _audio.stave_file(f, out, i + 1)
"""

# Two of these at once, each warm, released together: the stage functions on two cores with no engine.
_PAIR_SCRIPT = """
import json, sys, time
sys.path.insert(0, {root!r})
from bench import _audio
from core.pipeline.warmup import warm
files, out = json.loads(sys.argv[1]), sys.argv[2]
warm()
_audio.warm_up("stave", out + "-warm")
print("ready", flush=True)
sys.stdin.readline()
for i, f in enumerate(files):
    _audio.stave_file(f, out, i + 1)
print("done", flush=True)
"""


def run_fresh(argv: list[str], env: dict | None = None) -> float:
    """Wall seconds of a fresh ``python`` process from launch to exit (its output discarded)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, env={**os.environ, **(env or {})}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def run_fresh_loop(files: list[str], out: Path) -> float:
    return run_fresh(["-c", _LOOP_SCRIPT.format(root=str(ROOT)), json.dumps(files), str(out)])


def run_fresh_cli(files: list[str], out: Path, workers: int, config_dir: Path) -> float:
    """``stave process FILES --out OUT --workers N`` with default settings (a fresh settings folder)."""
    return run_fresh(["-m", "core.cli", "process", *files, "--out", str(out), "--workers", str(workers),
                      "--progress", "plain"], env={"STAVE_CONFIG_DIR": str(config_dir)})


def run_pair(files: list[str], out: Path) -> float:
    """The stage functions split over two warm plain processes started together; wall seconds until both end."""
    halves = [files[0::2], files[1::2]]
    procs = [subprocess.Popen([sys.executable, "-c", _PAIR_SCRIPT.format(root=str(ROOT)), json.dumps(h),
                               str(out / f"half{k}")], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for k, h in enumerate(halves)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a two-process baseline child failed to warm up")
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            if p.stdout.readline().strip() != "done":
                raise RuntimeError("a two-process baseline child failed")
        return time.perf_counter() - t0
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)


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

    The batch is left "interrupted", as after a crash right after its last job: the engine's dataset
    parts were written as the jobs finished (every 64 songs, as the engine writes them), the last
    songs since then were not, and the batch datasets were never published.
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
        from core.engine.datasets import BatchDatasets

        parts = BatchDatasets(store, str(out))
        for job_id in job_ids:  # what the supervisors did as each job finished; the crash lost the last buffer
            parts.song_finished(job_id)
        store.set_batch_status(batch_id, BatchStatus.INTERRUPTED)
        store.checkpoint()
    return batch_id


def forget_datasets(out: Path, batch_id: int) -> None:
    """As if the folder came from a Stave without dataset parts: no parts, no datasets, batch interrupted."""
    from core.engine.store import Store
    from core.engine.store_rows import BatchStatus

    shutil.rmtree(out / ".stave" / "datasets", ignore_errors=True)
    for name in ("songs.parquet", "bars.parquet", "notes.parquet"):
        (out / name).unlink(missing_ok=True)
    with Store.open(out, create=False) as store:
        store.set_batch_status(batch_id, BatchStatus.INTERRUPTED)


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
    naive_audio_s = r["naive_audio_s"]
    x = {k: audio_s / v for k, v in (("e1", e1["wall_s"]), ("e2", e2["wall_s"]), ("direct", r["direct_s"]),
                                     ("e1_jobs", e1["jobs_s"]), ("e2_jobs", e2["jobs_s"]), ("pair", r["pair_s"]),
                                     ("cli1", r["cli1_s"]), ("loop_fresh", r["loop_fresh_s"]))}
    x["naive"] = naive_audio_s / r["naive_s"]
    p(f"Stave engine scaling benchmark ({'--quick' if args.quick else 'full size'})")
    p(machine_line())
    p(code_line())
    p(f"corpus: {n_files} files, {audio_s:.0f} s of audio; numeric libraries on 1 thread per process; "
      f"{r['repeat']} round(s) of the engine and the loops; the table shows each one's best\n")
    p(f"{'':52}{'wall s':>8}{'x realtime':>12}")
    rows = [("engine, 1 worker (Engine.run)", e1["wall_s"], x["e1"]),
            ("engine, 2 workers (Engine.run)", e2["wall_s"], x["e2"]),
            ("  jobs phase, 1 worker", e1["jobs_s"], x["e1_jobs"]),
            ("  jobs phase, 2 workers", e2["jobs_s"], x["e2_jobs"]),
            ("stage functions in a loop, this process (1 core)", r["direct_s"], x["direct"]),
            ("stage functions in 2 plain processes, warm", r["pair_s"], x["pair"]),
            ("`stave process --workers 1`, fresh process", r["cli1_s"], x["cli1"]),
            ("stage functions in a loop, fresh process", r["loop_fresh_s"], x["loop_fresh"]),
            (f"naive librosa script, this process ({naive_audio_s:.0f} s of audio)", r["naive_s"], x["naive"])]
    for name, wall, xr in rows:
        p(f"{name:52}{wall:8.2f}{xr:12.1f}")
    for name, eng in (("1 worker", e1), ("2 workers", e2)):
        p(f"  {name}: first job started {eng['first_job_at_s']:.1f} s after the engine opened (pool + warm-up); "
          f"{eng['after_last_job_s']:.1f} s from the last job to the end (batch datasets, shutdown)")
    speedup = x["e2"] / x["e1"]
    vs_naive = x["e2"] / x["naive"]
    warm_overhead = e1["wall_s"] / r["direct_s"] - 1.0
    res = r["resume"]
    # The four ratios the targets are read on, from the best runs and per round (a round's runs are minutes
    # apart, so they share the machine's state; the median of 3+ rounds shrugs off one disturbed run, which
    # the ratio of two bests taken from different rounds does not).
    ratios = {"jobs": lambda o: o["engine1"]["jobs_s"] / o["engine2"]["jobs_s"],
              "pair": lambda o: o["direct_s"] / o["pair_s"],
              "standing": lambda o: o["cli1_s"] / o["loop_fresh_s"] - 1.0,
              "policies": lambda o: o["engine1"]["jobs_s"] / o["direct_s"] - 1.0}
    from_best = {k: f(r) for k, f in ratios.items()}
    rounds = r["rounds"]
    by_round = {k: sorted(f(o) for o in rounds) for k, f in ratios.items()}
    use_median = len(rounds) >= 3
    fig = {k: statistics.median(v) if use_median else from_best[k] for k, v in by_round.items()}

    def spread(key: str, fmt: str) -> str:
        values = by_round[key]
        if not use_median:
            return ""
        return (f"   (median of {len(values)} rounds, [{fmt.format(values[0])} .. {fmt.format(values[-1])}]; "
                f"from the best runs {fmt.format(from_best[key])})")

    p("\nfigure                                                   measured    target")
    if args.quick:
        p("(--quick: the corpus is seconds long, so fixed start-up costs decide these figures; run full size)")
    p(f"2 workers vs 1 worker, jobs phase (throughput)           {fig['jobs']:7.2f}x   >= {TARGET_TWO_WORKERS}x  "
      f"{verdict(fig['jobs'], TARGET_TWO_WORKERS)}{spread('jobs', '{:.2f}x')}")
    p(f"  whole Engine.run, with the one-off start and end       {speedup:7.2f}x   (best runs)")
    p(f"  the stage functions in 2 plain processes vs 1 loop     {fig['pair']:7.2f}x   (what this machine allows)"
      f"{spread('pair', '{:.2f}x')}")
    p(f"  ceiling: two busy numpy processes got {r['ceiling']:.2f} cores' worth of work at the start of this run")
    p(f"engine, 2 workers vs naive script on 1 core              {vs_naive:7.2f}x   >= {TARGET_VS_NAIVE:g}x    "
      f"{verdict(vs_naive, TARGET_VS_NAIVE)}   (best runs)")
    p(f"overhead of the policies and the store, 1 worker         {100 * fig['policies']:+7.1f}%   < 3%     "
      f"{verdict(fig['policies'], TARGET_OVERHEAD, higher_is_better=False)}{spread('policies', '{:+.1%}')}")
    p("  (the engine's jobs phase vs the same stage functions in a loop, both in this warm process)")
    p(f"  whole command from a standing start                    {100 * fig['standing']:+7.1f}%"
      f"{spread('standing', '{:+.1%}')}")
    p("  (`stave process --workers 1` vs a stage-function script, each a fresh process from launch to exit: "
      "the engine also starts its worker pool)")
    p(f"  whole Engine.run vs the loop in this warm process      {100 * warm_overhead:+7.1f}%   (pool start + "
      f"warm-up {e1['first_job_at_s']:.1f} s, which the warm loop never pays)")
    label = f"resume {res['jobs']:,} done jobs (open + run to BatchFinished)"
    p(f"{label:57}{res['total_s']:7.2f} s  < {TARGET_RESUME_S:g} s     "
      f"{verdict(res['total_s'], TARGET_RESUME_S, higher_is_better=False)}")
    p(f"  open the store {res['open_s']:.2f} s, start + run + datasets {res['run_s']:.2f} s "
      f"(dataset parts from the run, its last {res['jobs'] % 64} songs unflushed)")
    cold = r["resume_no_parts"]
    p(f"  same with no dataset parts (every song read from its folder)  {cold['total_s']:7.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus and a 100-job resume")
    ap.add_argument("--corpus", help="use the audio files in this folder instead of synthesized songs")
    ap.add_argument("--songs", type=int, default=16, help="synthesized songs (full size)")
    ap.add_argument("--seconds", type=float, default=180.0, help="length of each synthesized song (full size)")
    ap.add_argument("--resume-jobs", type=int, default=None, help="jobs in the resumed batch (default 1000)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="rounds of the timed engine/loop measurements: the best of each is kept, and each round's "
                         "own ratios are printed too (default 3; 1 with --quick)")
    args = ap.parse_args(argv)
    n_resume = args.resume_jobs or (100 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
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
        r, rounds = {}, []
        for i in range(repeat):  # interleaved, so a burst of load elsewhere hurts one round, not one figure
            say(f"round {i + 1}/{repeat}: stage functions in a loop, engine with 1 then 2 workers, two plain "
                f"processes, then stave process and a script from a standing start...")
            one = {"direct_s": run_direct(files, tmp / f"out-direct{i}", "stave"),
                   "engine1": run_engine(files, tmp / f"out-engine1-{i}", 1),
                   "engine2": run_engine(files, tmp / f"out-engine2-{i}", 2),
                   "pair_s": run_pair(files, tmp / f"out-pair{i}"),
                   "cli1_s": run_fresh_cli(files, tmp / f"out-cli{i}", 1, tmp / "config"),
                   "loop_fresh_s": run_fresh_loop(files, tmp / f"out-loop{i}")}
            rounds.append(one)
            for key, value in one.items():
                best(r, key, value)
        naive_files = files if args.quick else files[:max(1, len(files) // 4)]  # 4x slower: a quarter will do
        say(f"naive script on {len(naive_files)} file(s)...")
        r["naive_s"] = run_direct(naive_files, tmp / "out-naive", "naive")
        r["naive_audio_s"] = sum(_audio.duration_of(f) for f in naive_files)
        r["repeat"], r["ceiling"], r["rounds"] = repeat, r_ceiling, rounds
        say(f"resume of {n_resume} done jobs...")
        template = next(p.parent for p in (tmp / "out-engine1-0").glob("*/summary.json"))
        batch_id = build_done_batch(template, tmp / "out-resume", n_resume)
        r["resume"] = {"jobs": n_resume, **time_resume(tmp / "out-resume", batch_id, n_resume)}
        forget_datasets(tmp / "out-resume", batch_id)
        r["resume_no_parts"] = time_resume(tmp / "out-resume", batch_id, n_resume)
        report(args, len(files), audio_s, r)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
