"""Finished jobs' work folders leave the critical path: moved aside at once, deleted in the background.

A job's intermediates (decoded audio, spectra: tens of MB of ``.npy``) take
~30 ms to delete on an ordinary disk, time in which a worker would sit idle
waiting for its next stage. The supervisor instead renames the folder into
``OUT/.stave/trash/`` (one metadata operation, so the job's own path is free at
once and a re-run of that job can never write into a folder being deleted) and
one background thread removes what lands there. Whatever a crash leaves in the
trash is removed at the next run's start (:meth:`Discarder.sweep`).

Only folders under the discarder's own root are ever touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections import deque

log = logging.getLogger(__name__)

TRASH_DIRNAME = "trash"


class Discarder:
    """Removes folders in a background thread after moving them into ``trash_dir``.

    ``discard(path)`` returns as soon as ``path`` is gone from its place;
    ``drain(timeout_s)`` waits for the deletions queued so far. If the rename
    fails (another filesystem, say) the folder is deleted in the caller's
    thread, as before.
    """

    def __init__(self, trash_dir: str | os.PathLike[str]):
        self.trash_dir = os.fspath(trash_dir)
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # queued or being deleted
        self._thread: threading.Thread | None = None

    def discard(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        if not os.path.lexists(path):
            return
        aside = os.path.join(self.trash_dir, f"{os.path.basename(path)}-{uuid.uuid4().hex[:12]}")
        try:
            os.makedirs(self.trash_dir, exist_ok=True)
            os.rename(path, aside)
        except OSError as exc:
            log.debug("could not move %s aside (%s); deleting it in place", path, exc)
            _delete(path)
            return
        self._enqueue(aside)

    def sweep(self) -> int:
        """Queue for deletion whatever an earlier run left in the trash; how many entries."""
        try:
            with os.scandir(self.trash_dir) as entries:
                names = [e.path for e in entries]
        except OSError:
            return 0
        for path in names:
            self._enqueue(path)
        return len(names)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued deletion is done; False if ``timeout_s`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout=timeout_s)

    def _enqueue(self, path: str) -> None:
        with self._cond:
            self._queue.append(path)
            self._busy += 1
            if self._thread is None:  # one thread, started on first use, gone when the queue is empty
                self._thread = threading.Thread(target=self._loop, name="stave-discard", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._thread = None
                    return
                path = self._queue.popleft()
            try:
                _delete(path)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


def _delete(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError as exc:
        log.warning("could not delete %s: %s", path, exc)
