"""Test doubles: stand-ins for external tools, runnable as real processes."""

from __future__ import annotations

import sys
from pathlib import Path

FAKE_DEMUCS = Path(__file__).with_name("fake_demucs.py")


def fake_demucs_command() -> list[str]:
    """The command that replaces ``python -m demucs`` in tests."""
    return [sys.executable, str(FAKE_DEMUCS)]
