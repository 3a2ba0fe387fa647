"""What the controller tells the window: which actions are possible now, and one job as the details pane shows it."""

from __future__ import annotations

from dataclasses import dataclass

from core.engine.store_rows import JobRow, StageRow


@dataclass(frozen=True)
class ControlState:
    """What the window's actions may do now."""

    out_dir: str
    scanning: bool = False
    running: bool = False
    stopping: bool = False
    queued: int = 0
    retryable: int = 0  # failed, quarantined or cancelled rows
    degraded: int = 0
    error: str = ""  # why the output folder cannot be used

    @property
    def can_start(self) -> bool:
        return not self.running and not self.error and (self.queued > 0 or self.scanning)

    @property
    def can_pause(self) -> bool:
        return self.running and not self.stopping

    @property
    def can_cancel(self) -> bool:
        return (self.running and not self.stopping) or self.scanning

    @property
    def can_change_folder(self) -> bool:
        return not self.running and not self.scanning


@dataclass(frozen=True)
class JobInfo:
    """One job as the details pane shows it."""

    job: JobRow
    stages: list[StageRow]
    stage_order: tuple[str, ...]
    song_dir: str


__all__ = ["ControlState", "JobInfo"]
