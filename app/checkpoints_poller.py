"""Reads the Checkpoints panel's batches off the GUI thread, as often as the store can afford.

A read waits for the one in flight; :meth:`CheckpointsPoller.refresh_soon`
coalesces requests into one read within a second, or ten times as long as
the last read took (a batch of 10,000 jobs takes a few hundred milliseconds
to read), at most ten seconds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from app.runner import CheckpointReader

if TYPE_CHECKING:
    from app.engine_host import EngineHost

log = logging.getLogger(__name__)

CHECKPOINTS_MIN_MS, CHECKPOINTS_MAX_MS = 1000, 10000  # between two reads for the Checkpoints panel


class CheckpointsPoller(QObject):
    """Reads the host engine's batches on the host's pool, one read at a time."""

    changed = Signal(object)
    """A list of batches as the Checkpoints panel takes them (see ``app.runner.read_checkpoints``)."""

    def __init__(self, host: EngineHost, parent: QObject | None = None):
        super().__init__(parent)
        self._host = host
        self._busy = False
        self._reader = CheckpointReader()  # used by one pool task at a time (_busy)
        self._timer = QTimer(self, interval=CHECKPOINTS_MIN_MS, singleShot=True)
        self._timer.timeout.connect(self.refresh)

    def forget(self, batch_id: int) -> None:
        """The batch's stages changed: read its jobs again next time (any thread)."""
        self._reader.forget(batch_id)

    def refresh_soon(self) -> None:
        """Read soon (see the module's docstring); requests meanwhile make no further read."""
        if not self._timer.isActive():
            self._timer.start()

    def refresh(self) -> None:
        """Read now, or as soon as the read in flight has reported."""
        engine = self._host.engine
        if engine is None or self._host.closing:
            return
        if self._busy:
            self.refresh_soon()
            return
        self._busy = True

        def read() -> tuple[list, float]:
            started = time.monotonic()
            return self._reader(engine), time.monotonic() - started

        def done(result):
            batches, took_s = result
            self._busy = False
            self._timer.setInterval(int(min(CHECKPOINTS_MAX_MS, max(CHECKPOINTS_MIN_MS, 10000 * took_s))))
            self.changed.emit(batches)

        def failed(exc):
            self._busy = False
            log.debug("checkpoints not read: %s", exc)

        self._host.submit(self._host.pool, read, done=done, failed=failed)

    def stop(self) -> None:
        self._timer.stop()


__all__ = ["CHECKPOINTS_MAX_MS", "CHECKPOINTS_MIN_MS", "CheckpointsPoller"]
