"""How fast Stave's analysis is against the usual librosa script, on one core; memory; first-file latency.

    python bench/throughput.py              # 6 synthesized 60 s songs + a 60-minute file (several minutes)
    python bench/throughput.py --quick      # 2 x 6 s songs, no long file, no cold-cache run (~20 s)
    python bench/throughput.py --corpus DIR # your own files instead of synthesized ones

Each measurement runs in a fresh child process with every numeric library on
one thread (OMP/OPENBLAS/MKL/NUMBA = 1), so both sides get exactly one core.
Each side first runs once, untimed, on a few seconds of audio (imports and
numba's compiled code loaded), then analyses every file of the corpus:

(a) Stave: the stage functions ingest -> preprocess -> analyze -> segment ->
    export called in-process, as the engine's worker runs them (no store, no
    process pool: scaling.py measures those);
(b) naive: librosa.load, beat_track, each feature function on its own (each
    recomputes the STFT), key from mean chroma, then every bar sliced out and
    the same functions called again on the chunk.

x realtime = seconds of audio / seconds of wall time. Figures are printed
side by side with their targets; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_T_START = time.monotonic()  # first thing: the latency child reports time since its own start
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _audio  # noqa: E402  (needs ROOT on sys.path)

MIB = 1024 * 1024
TARGET_RATIO = 2.0
TARGET_PEAK_MIB = 1536.0  # 1.5 GiB


# -- children: each prints one JSON line ------------------------------------------------------
def _maxrss_mib() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB on Linux


def _child_throughput(side: str, files: list[str], out: str, repeat: int) -> dict:
    """Analyse ``files`` ``repeat`` times over; the best round's wall time (and its seconds per stage)."""
    _audio.warm_up(side, os.path.join(out, "warmup"))
    best: dict = {}
    for _ in range(repeat):
        stages: dict[str, float] = {}

        def on_stage(stage: str, seconds: float) -> None:
            stages[stage] = stages.get(stage, 0.0) + seconds

        results = []
        t0 = time.perf_counter()
        for i, f in enumerate(files):
            if side == "stave":
                s = _audio.stave_file(f, out, i + 1, on_stage=on_stage)
            else:
                s = _audio.naive_file(f, out)
            results.append({"file": os.path.basename(f), "tempo_bpm": s["tempo_bpm"], "key": s["key"],
                            "bars": s["bars"]})
        wall = time.perf_counter() - t0
        if not best or wall < best["wall_s"]:
            best = {"wall_s": wall, "stages": stages, "results": results}
    return best


def _child_memory(file: str, out: str) -> dict:
    import core.pipeline.stage_fns  # noqa: F401  (imports are part of a worker's baseline)

    rows = [("imports", 0.0, _maxrss_mib())]
    _audio.stave_file(file, out, 1, on_stage=lambda stage, s: rows.append((stage, s, _maxrss_mib())))
    return {"rows": rows, "peak_mib": _maxrss_mib()}


def _child_latency(file: str, out: str) -> dict:
    from core.pipeline import stage_fns  # noqa: F401

    imported = time.monotonic()
    _audio.stave_file(file, out, 1)
    return {"started": _T_START, "imported": imported, "done": time.monotonic()}


def _child_engine_latency(file: str, out: str) -> dict:
    """A batch of one file through ``Engine.run`` with one worker; when its job finished."""
    from core.engine import events as ev
    from core.engine.batch import Engine, EngineOptions
    from core.pipeline.config import PipelineConfig
    from core.pipeline.stages import build_pipeline

    bus, done = ev.EventBus(), []
    bus.subscribe(lambda e: done.append(time.monotonic()), ev.JobFinished)
    imported = time.monotonic()
    with Engine(out, build_pipeline(), EngineOptions(workers=1), bus=bus) as engine:
        engine.run(engine.add_paths([file], PipelineConfig()).batch_id)
    if not done:
        raise RuntimeError("the engine did not finish the file")
    return {"started": _T_START, "imported": imported, "done": done[0]}


def _run_child(args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args[:2]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent ------------------------------------------------------------------------------
def child_env(numba_cache: str | None = None) -> dict[str, str]:
    """This environment, one thread per numeric library, and numba's cache where the app keeps it."""
    env = {**os.environ, **_audio.ONE_THREAD_ENV}
    if numba_cache:
        env["NUMBA_CACHE_DIR"] = numba_cache
    else:
        from core.settings import configure_numba_cache

        configure_numba_cache(env)
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "ignore")
    return env


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    """"met", or how far the figure is from its target."""
    if value >= target if higher_is_better else value < target:
        return "met"
    if higher_is_better:
        return f"MISSED ({100 * (target - value) / target:.0f}% below)"
    return f"MISSED ({value / target:.1f}x the target)" if target > 0 else "MISSED"


def code_line() -> str:
    """The commit measured, and whether core/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "core"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "code: unknown (no git)"
    return f"code: commit {head or '?'}" + (" + uncommitted changes in core/" if dirty else "")


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}), Python "
            f"{platform.python_version()}, load average {load} (other processes may be running)")


def _corpus(args, tmp: Path) -> list[tuple[str, float]]:
    if args.corpus:
        files = _audio.audio_files(args.corpus)
        if not files:
            raise SystemExit(f"no audio files in {args.corpus}")
        return [(str(f), _audio.duration_of(f)) for f in files]
    n, dur = (2, 6.0) if args.quick else (args.songs, args.seconds)
    return [(str(s.path), s.duration_s) for s in _audio.make_corpus(tmp / "corpus", n, dur)]


def measure_throughput(files: list[str], audio_s: float, tmp: Path, env: dict[str, str], repeat: int) -> dict:
    out = {}
    for side in ("stave", "naive"):
        folder = tmp / f"out-{side}"
        folder.mkdir(exist_ok=True)
        r = _run_child(["--child", side, "--repeat", str(repeat), "--out", str(folder), *files], env)
        r["x_realtime"] = audio_s / r["wall_s"]
        out[side] = r
    return out


def measure_memory(song: str, minutes: float, tmp: Path, env: dict[str, str]) -> dict:
    long_file = _audio.make_long_file(Path(song), tmp / f"long_{minutes:g}min.wav", minutes)
    folder = tmp / "out-memory"
    folder.mkdir(exist_ok=True)
    import soundfile as sf

    info = sf.info(str(long_file))
    try:
        r = _run_child(["--child", "memory", "--out", str(folder), str(long_file)], env)
    finally:
        long_file.unlink(missing_ok=True)
    r["size_mib"] = info.frames * info.channels * 4 / MIB  # decoded as float32
    r["channels"], r["sr"] = info.channels, info.samplerate
    return r


def measure_latency(song: str, tmp: Path, cold: bool) -> dict:
    """First-file latency of a fresh process: the stage functions in it, and ``Engine.run`` with one worker.

    "cold" runs get an empty numba cache of their own; "warm" ones run again on
    that cache (or, without cold runs, on the app's usual cache).
    """
    runs = {}
    for kind in ("stages", "engine"):
        cache = tmp / f"numba-{kind}"  # empty: the cold run fills it, the warm run finds it
        for label in (("cold", "warm") if cold else ("warm",)):
            env = child_env(str(cache)) if cold else child_env()
            folder = tmp / f"out-latency-{kind}-{label}"
            folder.mkdir(exist_ok=True)
            t0 = time.monotonic()
            r = _run_child(["--child", "latency" if kind == "stages" else "engine-latency", "--out", str(folder),
                            song], env)
            runs[(kind, label)] = {"total_s": r["done"] - t0, "startup_s": r["imported"] - t0,
                                   "analysis_s": r["done"] - r["imported"]}
    return runs


def report(args, files, audio_s, thr, mem, lat) -> None:
    p = print
    p(f"Stave throughput benchmark ({'--quick' if args.quick else 'full size'})")
    p(machine_line())
    p(code_line())
    what = (str(args.corpus) if args.corpus
            else "synthesized songs (drums + chords + melody + noise), 44.1 kHz stereo 16-bit WAV")
    p(f"corpus: {len(files)} files, {audio_s:.0f} s of audio, {what}")
    p("each side: a fresh process, one core (OMP/OPENBLAS/MKL/NUMBA threads = 1), warmed up once untimed, "
      f"best of {args.repeat or (1 if args.quick else 2)} pass(es) over the corpus\n")
    s, n = thr["stave"], thr["naive"]
    p(f"{'':44}{'wall s':>9}{'x realtime':>12}")
    p(f"{'(a) Stave stages, in-process (ingest..export)':44}{s['wall_s']:9.2f}{s['x_realtime']:12.1f}")
    p(f"{'(b) naive librosa script':44}{n['wall_s']:9.2f}{n['x_realtime']:12.1f}")
    if args.quick:
        p("(--quick: a few seconds of audio per side; run full size for figures that mean something)")
    ratio = s["x_realtime"] / n["x_realtime"]
    p(f"{'ratio (a)/(b)':44}{'':9}{ratio:11.2f}x   target >= {TARGET_RATIO:g}x: {verdict(ratio, TARGET_RATIO)}")
    p("Stave seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in s["stages"].items()))
    p("\nper file (tempo BPM / key):   Stave | naive")
    for a, b in zip(s["results"], n["results"]):
        p(f"  {a['file'][:44]:44} {a['tempo_bpm']:7.1f} {a['key']:9} | {b['tempo_bpm']:7.1f} {b['key']:9}")
    p("")
    if mem is None:
        p("peak memory, long file: skipped (--quick)")
    else:
        p(f"peak memory, {args.minutes:g}-minute file (Stave stages, fresh process): {mem['peak_mib']:.0f} MiB   "
          f"target < {TARGET_PEAK_MIB:.0f} MiB: {verdict(mem['peak_mib'], TARGET_PEAK_MIB, higher_is_better=False)}")
        p(f"  (the file decoded as float32, {mem['channels']} ch at {mem['sr']} Hz, is {mem['size_mib']:.0f} MiB) "
          "peak RSS after each step: "
          + ", ".join(f"{stage} {rss:.0f} MiB ({secs:.1f} s)" for stage, secs, rss in mem["rows"]))
    p("first-file latency of a fresh process (process start -> first file analysed, every stage):")
    for kind, what in (("stages", "stage functions"), ("engine", "Engine.run, 1 worker")):
        for label, text in (("cold", "empty numba cache"), ("warm", "warm numba cache")):
            r = lat.get((kind, label))
            name = f"{what}, {text}"
            if r is None:
                p(f"  {name:40}: skipped (--quick: compiling numba's cache can take a minute or more)")
            else:
                p(f"  {name:40}: {r['total_s']:6.1f} s  (start + imports {r['startup_s']:.1f} s, "
                  f"then {r['analysis_s']:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny corpus, no long file, no cold-cache run")
    ap.add_argument("--corpus", help="analyse the audio files in this folder instead of synthesized songs")
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the long file for peak memory")
    ap.add_argument("--songs", type=int, default=6, help="synthesized songs (full size)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each synthesized song (full size)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="analyse the corpus this many times per side and keep the best (default 2; 1 with --quick)")
    ap.add_argument("--child", choices=("stave", "naive", "memory", "latency", "engine-latency"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child in ("stave", "naive"):
            result = _child_throughput(args.child, args.files, args.out, args.repeat or 1)
        elif args.child == "memory":
            result = _child_memory(args.files[0], args.out)
        elif args.child == "latency":
            result = _child_latency(args.files[0], args.out)
        else:
            result = _child_engine_latency(args.files[0], args.out)
        print(json.dumps(result))
        return 0
    repeat = args.repeat or (1 if args.quick else 2)
    if args.minutes <= 0 or args.songs < 1 or args.seconds < 5 or repeat < 1:
        ap.error("--minutes must be > 0, --songs and --repeat >= 1, --seconds >= 5")
    with tempfile.TemporaryDirectory(prefix="stave-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print("preparing the corpus...", file=sys.stderr, flush=True)
        corpus = _corpus(args, tmp)
        files, audio_s = [f for f, _ in corpus], sum(d for _, d in corpus)
        env = child_env()
        print("measuring throughput...", file=sys.stderr, flush=True)
        thr = measure_throughput(files, audio_s, tmp, env, repeat)
        mem = None
        if not args.quick:
            print(f"measuring peak memory on a {args.minutes:g}-minute file...", file=sys.stderr, flush=True)
            mem = measure_memory(files[0], args.minutes, tmp, env)
        print("measuring first-file latency...", file=sys.stderr, flush=True)
        lat = measure_latency(files[0], tmp, cold=not args.quick)
        report(args, files, audio_s, thr, mem, lat)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
