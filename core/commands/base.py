"""What a `stave` subcommand is (kept apart from core.cli so `python -m core.cli` sees one class)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Subcommand:
    """One ``stave NAME ...`` command: how to declare its arguments and how to run it."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("-") or " " in self.name:
            raise ValueError(f"Subcommand.name must be a plain word, got {self.name!r}")
