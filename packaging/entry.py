"""Entry point of the PyInstaller build: the `stave` command (no arguments opens the window)."""

import multiprocessing
import sys

from core.cli import entry

if __name__ == "__main__":
    multiprocessing.freeze_support()  # worker processes re-enter here in a frozen build
    entry()
