"""How the controller builds engines and checks them: the pipeline, its config, the executor, the health check
and the preflight.

The defaults are the real ones, imported on first use (the pipeline pulls in
librosa and friends); tests hand the controller a recipe with a small pipeline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from core.pipeline.config import PipelineConfig
from core.resilience.health import HealthReport, default_registry
from core.settings import RunSettings, Settings

if TYPE_CHECKING:  # the engine (pebble, multiprocessing, asyncio) is imported when a folder is first opened
    from core.engine.batch import EngineOptions, Pipeline
    from core.engine.executor import StageExecutor

log = logging.getLogger(__name__)


def default_output_dir() -> str:
    return os.path.join(os.path.expanduser("~"), "Stave-output")


def default_pipeline() -> Pipeline:
    """The real analysis pipeline (imported on first use: it is heavy)."""
    from core.pipeline.stages import build_pipeline

    return build_pipeline()


def default_health(out_dir: str) -> HealthReport:
    """The health report, made in a child process (`stave health --json`).

    The checks import librosa, numba and friends to prove they work; doing that in
    the window's own process would cost it seconds of start-up and memory it never
    needs. If the child cannot run, the checks run here instead.
    """
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-m", "core.cli", "health", "--json", "--out", out_dir],
                              capture_output=True, text=True, timeout=120)
        return HealthReport.from_dict(json.loads(done.stdout))
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        log.warning("health check in a child process failed (%s); checking in this process", exc)
        return default_registry(out_dir=out_dir).run_all()


def default_preflight(paths: list[str], out_dir: str, config: PipelineConfig, workers: int):
    """A few seconds of checks before a run (files, disk, memory): core.engine.preflight."""
    from core.engine.preflight import preflight

    return preflight(paths, out_dir, config, workers=workers)


def run_workers(run: RunSettings) -> int:
    """The worker processes the window runs: the setting, at most one per usable core (see workers_to_run)."""
    from core.engine import workers_to_run

    return workers_to_run(run.workers)


def engine_options(run: RunSettings) -> EngineOptions:
    """The engine's options from the run settings (read each time an engine is opened)."""
    from core.engine.batch import EngineOptions

    return EngineOptions(workers=run_workers(run), max_crashes=run.max_crashes, keep_work_files=run.keep_work_files,
                         retry=run.retry, breaker=run.breaker, timeouts=run.timeouts)


@dataclass(frozen=True)
class EngineRecipe:
    """How the controller builds engines and checks health (tests swap in a small pipeline)."""

    pipeline: Callable[[], Pipeline] = default_pipeline
    config: Callable[[Settings], Any] = lambda settings: settings.pipeline
    executor: StageExecutor | None = None  # None: each engine owns a process pool
    health: Callable[[str], HealthReport] = default_health
    preflight: Callable[[list[str], str, PipelineConfig, int], Any] | None = default_preflight


__all__ = ["EngineRecipe", "default_health", "default_output_dir", "default_pipeline", "default_preflight",
           "engine_options"]
