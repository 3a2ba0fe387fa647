"""Start Stave's window: ``stave gui [PATHS...] [--screenshot FILE]``."""

from __future__ import annotations

import argparse
import os
import sys
import time

APP_ID = "io.stave.Stave"  # shared by the .desktop file, the icon and the AppStream metadata
SCREENSHOT_WAIT_S = 8.0  # at most, for the scan and the health check before rendering


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def keep_bools_alive() -> None:
    """Work around PySide6 6.12 on CPython 3.11: ``SignalInstance.emit()`` and ``.connect()`` return
    ``True`` without owning a reference, so every signal takes one reference from ``True`` and after a
    few thousand signals CPython aborts ("bool_dealloc: deallocating True or False"). From 3.12 on the
    bools are immortal; before, give them more references than any session can take (they are static
    objects, never freed, so this changes nothing else)."""
    import PySide6

    if sys.version_info >= (3, 12) or PySide6.__version_info__[:2] < (6, 12) or getattr(keep_bools_alive, "done", 0):
        return
    import ctypes

    for b in (True, False):
        ctypes.c_ssize_t.from_address(id(b)).value += 1 << 40  # ob_refcnt is a PyObject's first field
    keep_bools_alive.done = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stave gui", description="Open Stave's window.")
    p.add_argument("paths", nargs="*", help="files or folders to queue")
    p.add_argument("--out", metavar="DIR", help="output folder for this session (default: from settings)")
    p.add_argument("--screenshot", metavar="FILE", help="render the window once, save a PNG and exit")
    p.add_argument("--start", action="store_true", help="start the batch once PATHS are queued")
    p.add_argument("--screenshot-after", type=float, default=0.0, metavar="S",
                   help="with --screenshot and --start: render S seconds after the batch started")
    return p


def main(argv: list[str] | None = None, *, recipe=None) -> int:
    """Open the window (``recipe``: how engines are built, for tests; default the real pipeline)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not _has_display():
        print(
            "Stave needs a display to open its window, and none was found "
            "(DISPLAY and WAYLAND_DISPLAY are unset).\n"
            "  - On a desktop, start it from a graphical session.\n"
            "  - Over SSH, use `ssh -X`, or run headless: `stave process FILES --out DIR`.\n"
            "  - To render offscreen (CI, screenshots): QT_QPA_PLATFORM=offscreen stave gui --screenshot out.png",
            file=sys.stderr,
        )
        return 1

    keep_bools_alive()
    from core.settings import configure_numba_cache

    configure_numba_cache()  # before anything imports librosa

    from PySide6.QtWidgets import QApplication

    from app.controller import Controller, EngineRecipe
    from app.main_window import MainWindow
    from core.logs import enable_crash_traces, setup_logging

    setup_logging()
    enable_crash_traces()  # a native crash (Qt, a C extension) leaves every thread's stack in the log folder
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("Stave")
    app.setOrganizationName("Stave")
    app.setDesktopFileName(APP_ID)
    controller = Controller(recipe=recipe or EngineRecipe())
    window = MainWindow(controller)
    window.show()
    if args.out:
        controller.set_output_dir(args.out)
    controller.open()
    if args.paths:
        controller.add_paths([os.path.abspath(p) for p in args.paths])
    if args.start:
        controller.start()
    if args.screenshot:
        return _screenshot(app, window, controller, args.screenshot, args.screenshot_after if args.start else 0.0)
    return app.exec()


def _screenshot(app, window, controller, path: str, after_s: float = 0.0) -> int:
    """Wait (a few seconds at most) for the scan and the health check, render the window, save a PNG."""
    window.resize(1280, 800)
    deadline = time.monotonic() + SCREENSHOT_WAIT_S
    while controller.busy and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    later = time.monotonic() + after_s
    while time.monotonic() < later:
        app.processEvents()
        time.sleep(0.02)
    settle = time.monotonic() + 0.2  # let the bridge deliver the last events
    while time.monotonic() < settle:
        app.processEvents()
        time.sleep(0.02)
    ok = window.grab().save(path, "PNG")
    window.close()
    if not ok:
        print(f"could not write the screenshot to {path}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
