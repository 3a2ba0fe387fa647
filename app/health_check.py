"""The dependency health check as the window runs it: on the controller's pool, one at a time, its last
report kept for a window connected late. What the check is comes with the recipe
(:func:`app.engine_recipe.default_health`: ``stave health --json`` in a child process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, Signal

from core.resilience.health import HealthReport

if TYPE_CHECKING:
    from app.engine_host import EngineHost


class HealthCheck(QObject):
    """Runs ``check(out_dir)`` on the host's pool, never two at once; keeps the last report."""

    checking = Signal(bool)
    """True while a check runs."""
    checked = Signal(object)
    """A ``HealthReport``."""
    failed = Signal(str)
    """A readable message: the check itself could not run."""

    def __init__(self, host: EngineHost, check: Callable[[str], HealthReport], parent: QObject | None = None):
        super().__init__(parent)
        self._host = host
        self._check = check
        self._running = False
        self.last_report: HealthReport | None = None

    def run(self, out_dir: str) -> None:
        """Check again (nothing happens while a check runs or the host is closing)."""
        if self._running or self._host.closing:
            return
        self._running = True
        self.checking.emit(True)
        self._host.submit(self._host.pool, self._check, out_dir, done=self._done, failed=self._failed)

    def _done(self, report: HealthReport) -> None:
        self._running = False
        self.last_report = report
        self.checking.emit(False)
        self.checked.emit(report)

    def _failed(self, exc: BaseException) -> None:
        self._running = False
        self.checking.emit(False)
        self.failed.emit(f"The health check failed: {exc}")


__all__ = ["HealthCheck"]
