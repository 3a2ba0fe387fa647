"""`stave process PATHS... --out DIR` and `stave resume DIR`."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from typing import Any

from core.commands.base import Subcommand

STAGE_CHOICES = ("ingest", "preprocess", "separate", "analyze", "transcribe", "segment", "export")


def _time_signature(text: str) -> tuple[int, int]:
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time signature like 4/4 or 6/8, got {text!r}") from None
    return num, den


def _timeout(text: str) -> tuple[str, float]:
    stage, _, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STAGE=SECONDS, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"a timeout is a number of seconds above 0, got {seconds!r}")
    if stage not in STAGE_CHOICES:
        raise argparse.ArgumentTypeError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_CHOICES)})")
    return stage, value


def _worker_count(text: str) -> int:
    from core.settings import MAX_WORKERS

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_WORKERS}, got {text!r}")
    return value


def _workers_for(args: argparse.Namespace, settings, jobs: int | None = None) -> int:
    """The workers this run starts: what was asked (--workers, else the settings), at most one per usable core
    and one per job; says so when --workers asked for more cores than there are."""
    from core.engine import usable_cpus, workers_to_run

    requested = args.workers or settings.run.workers
    workers = workers_to_run(requested, jobs)
    if args.workers and workers < requested and workers == usable_cpus():
        print(f"stave: running {workers} worker{'s' if workers > 1 else ''}, not {requested}: Stave may use "
              f"{workers} core{'s' if workers > 1 else ''} here, and more workers would only wait for them "
              "while using more memory", file=sys.stderr)
    return workers


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_worker_count, metavar="N",
                   help="parallel worker processes (default: from settings; at most one per core)")
    p.add_argument("--progress", choices=("rich", "plain", "json"),
                   help="progress display: a live bar, a line per file, or one JSON event per line "
                        "(default: rich on a terminal, else plain)")


def _configure_process(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATHS", help="audio files and folders (scanned recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    _add_run_options(p)
    g = p.add_argument_group("analysis (defaults from your settings)")
    g.add_argument("--stems", action=argparse.BooleanOptionalAction, default=None,
                   help="separate stems (Demucs when installed, else harmonic/percussive)")
    g.add_argument("--midi", action=argparse.BooleanOptionalAction, default=None,
                   help="transcribe notes to MIDI (Basic Pitch when installed, else pYIN)")
    g.add_argument("--separation-backend", choices=("auto", "demucs", "hpss"))
    g.add_argument("--transcription-backend", choices=("auto", "basic_pitch", "pyin"))
    g.add_argument("--keep-stems", action=argparse.BooleanOptionalAction, default=None, help="write stems as WAV")
    g.add_argument("--bar-audio", action=argparse.BooleanOptionalAction, default=None,
                   help="write one audio chunk per bar")
    g.add_argument("--analysis-sr", type=int, metavar="HZ", help="analysis sample rate")
    g.add_argument("--time-signature", type=_time_signature, metavar="N/D", help="for bars, e.g. 3/4")
    g.add_argument("--timeout", type=_timeout, action="append", default=[], metavar="STAGE=SECONDS",
                   help="a fixed timeout for a stage (default: adaptive)")
    p.add_argument("--no-preflight", action="store_true", help="skip the checks made before the batch starts")


def _configure_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="the output folder of the interrupted batch")
    _add_run_options(p)
    p.add_argument("--retry-failed", action="store_true", help="also run the failed and quarantined files again")


def _pipeline_config(settings, args) -> Any:
    from core.pipeline.config import PipelineConfig

    changes: dict[str, Any] = {}
    for flag, field in (("stems", "separate"), ("midi", "transcribe"), ("separation_backend", "separation_backend"),
                        ("transcription_backend", "transcription_backend"), ("keep_stems", "keep_stems"),
                        ("bar_audio", "export_bar_audio"), ("analysis_sr", "analysis_sr")):
        value = getattr(args, flag, None)
        if value is not None:
            changes[field] = value
    if args.time_signature:
        changes["time_signature_numerator"], changes["time_signature_denominator"] = args.time_signature
    if args.timeout:
        changes["stage_timeouts"] = {**settings.pipeline.stage_timeouts, **dict(args.timeout)}
    data = {**settings.pipeline.to_dict(), **changes}
    config, _ = PipelineConfig.from_dict(data)
    return config


def _engine_options(settings, workers: int | None):
    from core.engine.batch import EngineOptions

    run = settings.run
    return EngineOptions(workers=workers or run.workers, max_crashes=run.max_crashes,
                         keep_work_files=run.keep_work_files, retry=run.retry, breaker=run.breaker,
                         timeouts=run.timeouts)


def _load_settings():
    from core.logs import enable_crash_traces, setup_logging
    from core.settings import SettingsStore

    setup_logging(console=False)  # the progress display speaks on the terminal; the log file keeps the rest
    enable_crash_traces()

    loaded = SettingsStore().load()
    for warning in loaded.warnings:
        print(f"stave: {warning}", file=sys.stderr)
    return loaded.settings


class _CtrlC:
    """First Ctrl-C pauses the batch (state saved); a second one exits at once."""

    def __init__(self, engine, out_dir: str):
        self.engine = engine
        self.out_dir = out_dir
        self.count = 0
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            print(f"\nstave: pausing (the state is saved). Resume with: stave resume {self.out_dir}\n"
                  "       Press Ctrl-C again to quit at once.", file=sys.stderr)
            self.engine.pause("interrupted by Ctrl-C")
        else:
            print("\nstave: quitting; `stave resume` finishes the batch.", file=sys.stderr)
            os._exit(130)


def _run_batch(engine, batch_id: int, args) -> int:
    from core.commands.report import print_summary

    from core.commands.progress import make_progress

    reporter = make_progress(args.progress)
    unsubscribe = engine.bus.subscribe(reporter)
    try:
        with _CtrlC(engine, engine.out_dir):
            summary = engine.run(batch_id, workers=args.workers)
    finally:
        unsubscribe()
        reporter.close()
    return print_summary(summary, engine.out_dir, json_mode=args.progress == "json")


def _start_workers(workers: int, config):
    """The worker pool, started now: its imports and first calls overlap loading the engine, preflight and
    opening the store."""
    from core.engine.executor import ProcessExecutor
    from core.pipeline import WORKER_PRELOAD, WORKER_WARM_START

    executor = ProcessExecutor(workers, preload=WORKER_PRELOAD, warm_start=(WORKER_WARM_START, config.to_dict()))
    executor.start()
    return executor


def _run_process(args: argparse.Namespace) -> int:
    from core.engine.scan import display_path, scan
    from core.pipeline.config import ConfigError

    settings = _load_settings()
    try:
        config = _pipeline_config(settings, args)
    except ConfigError as exc:
        print(f"stave: {exc}", file=sys.stderr)
        return 2
    out_dir = os.path.abspath(args.out)
    paths = [os.path.abspath(p) for p in args.paths]
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        print("stave: no such file or folder: " + ", ".join(display_path(p) for p in missing), file=sys.stderr)
        return 2
    found = scan(paths, exclude=[out_dir])
    if not found.files:
        print("stave: found no audio files to analyse", file=sys.stderr)
        for s in found.skipped[:20]:
            print(f"  skipped {display_path(s.path)}: {s.reason}", file=sys.stderr)
        return 1
    # Every early exit above needs no worker; from here on there is work, so the pool starts now.
    args.workers = _workers_for(args, settings, len(found.files))
    executor = _start_workers(args.workers, config)
    try:
        return _process_files(args, settings, config, found, paths, out_dir, executor)
    finally:
        executor.shutdown()


def _process_files(args: argparse.Namespace, settings, config, found, paths: list[str], out_dir: str,
                   executor) -> int:
    from core.engine.batch import Engine
    from core.engine.preflight import preflight
    from core.engine.store import StoreError
    from core.pipeline.stages import build_pipeline

    if settings.run.preflight and not args.no_preflight:
        report = preflight([f.path for f in found.files], out_dir, config, workers=args.workers)
        if report.blockers or report.warnings:
            print(report.format_text(), file=sys.stderr)
        if any(p.area != "files" for p in report.blockers):
            print("stave: not starting: fix the blockers above, or run with --no-preflight", file=sys.stderr)
            return 1
        if report.blockers:
            print("stave: starting anyway: the files above will fail with these reasons; the others are analysed.\n",
                  file=sys.stderr)
    try:
        engine = Engine(out_dir, build_pipeline(), _engine_options(settings, args.workers), executor=executor)
    except StoreError as exc:
        print(f"stave: {exc}", file=sys.stderr)
        return 1
    with engine:
        added = engine.add_scanned(found, paths, config)
        return _run_batch(engine, added.batch_id, args)


def _run_resume(args: argparse.Namespace) -> int:
    from core.engine.batch import Engine
    from core.engine.store import StoreError
    from core.pipeline.stages import build_pipeline

    settings = _load_settings()
    out_dir = os.path.abspath(args.out)
    args.workers = _workers_for(args, settings)
    try:
        engine = Engine(out_dir, build_pipeline(), _engine_options(settings, args.workers), create=False)
    except StoreError as exc:
        print(f"stave: {exc}", file=sys.stderr)
        return 1
    with engine:
        batch = engine.store.latest_unfinished_batch()
        if batch is None and args.retry_failed:
            batches = engine.store.list_batches()
            batch = batches[-1] if batches else None
        if batch is None:
            print(f"stave: nothing to resume in {out_dir}: every batch there has finished "
                  "(use --retry-failed to run failed files again)", file=sys.stderr)
            return 0
        if args.retry_failed:
            engine.retry_failed(batch.id)
        counts = engine.store.counts(batch.id)
        if counts["pending"] or counts["running"]:  # else only the datasets remain: no worker is needed
            engine.start_workers(batch.config.get("pipeline") or {})
        return _run_batch(engine, batch.id, args)


PROCESS = Subcommand(name="process", help="analyse audio files and folders into an output folder",
                     configure=_configure_process, run=_run_process)
RESUME = Subcommand(name="resume", help="finish the interrupted batch in an output folder",
                    configure=_configure_resume, run=_run_resume)
COMMANDS = (PROCESS, RESUME)
