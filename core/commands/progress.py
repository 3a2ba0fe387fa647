"""How a running batch shows itself on the terminal: a rich progress bar, plain lines, or JSON lines."""

from __future__ import annotations

import json
import sys
import threading
from typing import TextIO

from core.engine import events as ev
from core.engine.scan import display_path


class JsonProgress:
    """One JSON object per event, one per line (for machines)."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        line = json.dumps(ev.event_to_dict(event), default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class PlainProgress:
    """A line per finished, failed or retried file (for logs and pipes)."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self._lock = threading.Lock()
        self.total = 0
        self.count = 0

    def _say(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.BatchStarted):
            self.total = e.total_jobs
            self._say(f"batch {e.batch_id}: {e.total_jobs} file(s){' (resumed)' if e.resumed else ''}")
        elif isinstance(e, ev.JobFinished):
            self.count += 1
            note = "  [degraded]" if e.degraded else ""
            took = (f"unchanged: the results of batch {e.reused_from_batch}" if e.reused_from_batch is not None
                    else f"{e.elapsed_s:.1f} s")
            self._say(f"done    {display_path(e.path)}  ({took}){note}")
        elif isinstance(e, ev.JobFailed):
            self.count += 1
            self._say(f"FAILED  {display_path(e.path)}  at {e.stage}: {e.kind}: {e.reason}")
        elif isinstance(e, ev.StageRetrying):
            self._say(f"retry   job {e.job_id} {e.stage} in {e.delay_s:.1f} s ({e.kind}: {e.reason})")
        elif isinstance(e, ev.BreakerChanged):
            self._say(f"breaker {e.name}: {e.old} -> {e.new}")
        elif isinstance(e, ev.BatchPaused):
            self._say(f"paused: {e.reason}")

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar: files done, current stages, ETA, failures and open breakers."""

    def __init__(self, stream: TextIO = sys.stderr):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(file=stream)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console, transient=False)
        self.task = self.progress.add_task("Analysing", total=None, info="")
        self.failed = 0
        self.open_breakers: set[str] = set()
        self.progress.start()

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.Progress):
            stages = ", ".join(sorted({s for _, s in e.running if s})) or "-"
            info = f"now: {stages}"
            if e.failed:
                info += f"  [red]{e.failed} failed[/]"
            if self.open_breakers:
                info += f"  [yellow]open: {', '.join(sorted(self.open_breakers))}[/]"
            self.progress.update(self.task, total=e.total, completed=e.done + e.failed, info=info)
        elif isinstance(e, ev.BatchStarted):
            self.progress.update(self.task, total=e.total_jobs)
        elif isinstance(e, ev.JobFailed):
            self.progress.console.print(f"[red]failed[/] {display_path(e.path)} at {e.stage}: {e.kind}: {e.reason}")
        elif isinstance(e, ev.BreakerChanged):
            (self.open_breakers.add if e.new == "open" else self.open_breakers.discard)(e.name)
            self.progress.console.print(f"[yellow]breaker {e.name}: {e.old} -> {e.new}[/]")

    def close(self) -> None:
        self.progress.stop()


def make_progress(kind: str | None):
    if kind == "json":
        return JsonProgress()
    if kind == "plain" or (kind is None and not sys.stderr.isatty()):
        return PlainProgress()
    return RichProgress()
