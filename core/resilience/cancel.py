"""A cancel token: a flag that work checks between steps and sleeps wait on."""

from __future__ import annotations

import threading


class CancelToken:
    """Set once to ask running work to stop; ``wait`` wakes at once when set.

    A token may have a parent: cancelling a batch cancels each job's token.
    """

    def __init__(self, parent: "CancelToken | None" = None):
        self._event = threading.Event()
        self._parent = parent
        self.reason = ""
        self._children: list[CancelToken] = []
        self._lock = threading.Lock()
        if parent is not None:
            parent._add_child(self)

    def _add_child(self, child: "CancelToken") -> None:
        with self._lock:
            self._children.append(child)
            already = self._event.is_set()
        if already:
            child.cancel(self.reason)

    def detach(self) -> None:
        """Stop following the parent (when this token's work is over), so parents do not pile up children."""
        parent, self._parent = self._parent, None
        if parent is not None:
            with parent._lock:
                if self in parent._children:
                    parent._children.remove(self)

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
            self._event.set()
            children = list(self._children)
        for child in children:
            child.cancel(reason)

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds; True when cancelled."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            from core.resilience.errors import Cancelled

            raise Cancelled(self.reason or "cancelled")
