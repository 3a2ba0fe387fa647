"""The ``stave`` command line: the headless twin of the window.

Subcommands are :class:`Subcommand` objects. ``health`` and ``gui`` live here;
others (``process``, ``resume``, ``status``) live in their own modules, each
exposing ``COMMAND: Subcommand`` and listed in :data:`COMMAND_MODULES`. Those
modules are imported to build the parser, so they must keep heavy imports
inside their ``run`` function.

``stave`` with no subcommand opens the window. Exit codes: 0 success, 1 a
check or job failed, 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
from typing import Iterable, Sequence

from core import __version__
from core.commands.base import Subcommand
from core.resilience.health import configure_numba_cache, default_registry

# Modules that each expose ``COMMAND: Subcommand`` or ``COMMANDS: tuple[Subcommand, ...]``.
COMMAND_MODULES: tuple[str, ...] = ("core.commands.process", "core.commands.status")


# --- health -----------------------------------------------------------------------


def _configure_health(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", metavar="DIR", help="also check this output folder (free space, write access)")


def _run_health(args: argparse.Namespace) -> int:
    report = default_registry(out_dir=args.out).run_all()
    if args.json:
        print(report.to_json())
    else:
        print(report.format_text(), end="")
    return 0 if report.ok else 1


HEALTH = Subcommand(
    name="health",
    help="check dependencies, the output folder and worker processes",
    configure=_configure_health,
    run=_run_health,
)


# --- gui --------------------------------------------------------------------------


def _configure_gui(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATHS", help="files or folders to queue")
    p.add_argument("--screenshot", metavar="FILE", help="render the window once, save a PNG and exit")


def _run_gui(args: argparse.Namespace) -> int:
    argv = list(getattr(args, "paths", None) or [])
    if getattr(args, "screenshot", None):
        argv += ["--screenshot", args.screenshot]
    return launch_gui(argv)


def launch_gui(argv: list[str]) -> int:
    """Hand ``argv`` to the window's own parser (``stave gui --help`` lists its options)."""
    try:
        # dynamic on purpose: core never imports app statically
        app_main = importlib.import_module("app.main")
    except ImportError as exc:
        print(
            f"stave: the window cannot start: {exc}.\n"
            "  Install the GUI dependencies (pip install PySide6-Essentials pyqtgraph), "
            "or work headless with `stave process`.",
            file=sys.stderr,
        )
        return 1
    return int(app_main.main(argv) or 0)


GUI = Subcommand(name="gui", help="open the window (the default)", configure=_configure_gui, run=_run_gui)

BUILTIN_COMMANDS: tuple[Subcommand, ...] = (GUI, HEALTH)


def load_commands(modules: Iterable[str] = COMMAND_MODULES) -> list[Subcommand]:
    """The built-in commands plus ``COMMAND`` from each listed module."""
    commands = list(BUILTIN_COMMANDS)
    for name in modules:
        module = importlib.import_module(name)
        found = list(getattr(module, "COMMANDS", ())) or [getattr(module, "COMMAND", None)]
        if not all(isinstance(c, Subcommand) for c in found):
            raise TypeError(f"{name} must define COMMAND = Subcommand(...) or COMMANDS = (Subcommand(...), ...)")
        commands.extend(found)
    return commands


def build_parser(commands: Sequence[Subcommand] | None = None) -> argparse.ArgumentParser:
    commands = load_commands() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="stave",
        description="Batch audio analysis that never loses work. With no command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"stave {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen: set[str] = set()
    for command in commands:
        if command.name in seen:
            raise ValueError(f"two subcommands are named {command.name!r}")
        seen.add(command.name)
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``stave``; returns the exit code (2 on a usage error)."""
    configure_numba_cache()  # before anything imports librosa
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gui"]:  # the window parses its own options
        try:
            return launch_gui(argv[1:])
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    run = getattr(args, "_run", None) or GUI.run
    return run(args)


def entry() -> None:
    """The ``stave`` console command: :func:`main`, then a quick exit.

    Once a command has returned, everything it owns is closed (store, folder
    lock, worker pool) and its output written, so after the ``atexit`` handlers
    (logging, multiprocessing's finalizers) have run, the interpreter is left
    with ``os._exit``: tearing down the modules of numpy, pyarrow and pandas
    object by object takes a third of a second that nobody needs. The window
    exits normally (Qt and QSettings clean up as they go).
    """
    argv = sys.argv[1:]
    code = main(argv)
    if not argv or argv[0] == "gui":  # the window, also the default command
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (stave status | head): nothing left to say
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    entry()
