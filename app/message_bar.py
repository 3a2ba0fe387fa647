"""The bar above the queue that says what needs a decision (resume offer, preflight block, unusable folder).

A message with a few buttons, never a modal pop-up: the window stays usable
and a running batch carries on while the bar waits.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class MessageBar(QFrame):
    """A non-blocking bar above the queue: a message and a few buttons (never a modal pop-up)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(10, 6, 6, 6)
        self._layout.addWidget(self.label, 1)
        self.buttons: list[QPushButton] = []
        self.hide()

    def show_message(self, text: str, buttons: list[tuple[str, object]], kind: str = "info") -> None:
        for b in self.buttons:
            b.deleteLater()
        self.buttons = []
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        for label, slot in buttons:
            button = QPushButton(label)
            button.clicked.connect(slot)
            button.clicked.connect(self.hide)
            self._layout.addWidget(button)
            self.buttons.append(button)
        self.show()

    def offer_resume(self, batch_id: int, counts: dict, resume: Callable[[], None],
                     discard: Callable[[], None]) -> None:
        """The output folder holds an interrupted batch: ``counts`` is {status: n}."""
        waiting = counts.get("pending", 0) + counts.get("running", 0)
        done = counts.get("done", 0)
        self.show_message(
            f"An interrupted batch (#{batch_id}) is in this folder: {done} done, {waiting} waiting. "
            "Resume it, or discard what is left of it?",
            [("Resume", resume), ("Discard", discard)])

    def report_preflight_block(self, text: str, start_anyway: Callable[[], None]) -> None:
        """The preflight report ``text`` stopped the start: its first lines, the whole as a tooltip."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        self.show_message("Not started: " + " ".join(lines[:4]) + (" …" if len(lines) > 4 else ""),
                          [("Start anyway", start_anyway)], kind="error")
        self.label.setToolTip(text)

    def report_unusable_folder(self, error: str, choose_folder: Callable[[], None]) -> None:
        self.show_message(f"The output folder cannot be used: {error}",
                          [("Choose another folder…", choose_folder)], kind="error")


__all__ = ["MessageBar"]
