"""Start Stave's window: ``stave gui [PATHS...] [--screenshot FILE]``."""

from __future__ import annotations

import argparse
import os
import sys

APP_ID = "io.stave.Stave"  # shared by the .desktop file, the icon and the AppStream metadata


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stave gui", description="Open Stave's window.")
    p.add_argument("paths", nargs="*", help="files or folders to queue")
    p.add_argument("--screenshot", metavar="FILE", help="render the window once, save a PNG and exit")
    return p


def main(argv: list[str] | None = None) -> int:
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

    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("Stave")
    app.setOrganizationName("Stave")
    app.setDesktopFileName(APP_ID)
    window = MainWindow()
    window.show()
    if args.screenshot:
        app.processEvents()
        ok = window.grab().save(args.screenshot, "PNG")
        window.close()
        if not ok:
            print(f"could not write the screenshot to {args.screenshot}", file=sys.stderr)
            return 1
        print(args.screenshot)
        return 0
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
