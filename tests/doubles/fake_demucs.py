#!/usr/bin/env python3
"""A stand-in for ``python -m demucs`` with Demucs' command line and output layout.

Run as ``[sys.executable, this_file, <demucs args>]``. Behaviour is chosen by
environment variables:

``FAKE_DEMUCS_MODE``
    ``succeed`` (default): write the stems, each a filtered part of the input
    (they add back up to it), to ``<out>/<model>/<--filename>`` like Demucs
    (default template ``{track}/{stem}.{ext}``). A missing input is reported on
    stderr and skipped with exit status 0, as Demucs does.
    ``fail``: print a Python traceback to stderr and exit 1.
    ``hang``: ignore SIGTERM, start a child that does the same, sleep forever.
    ``crash``: kill itself with SIGSEGV.
    ``flaky:N``: fail the first N runs, then succeed (counts in ``FAKE_DEMUCS_COUNTER``).
    ``garbage``: exit 0 after writing stem files that are not audio.
``FAKE_DEMUCS_DELAY``: seconds to sleep before writing (``succeed``), to test cancel.
``FAKE_DEMUCS_PIDFILE``: append the pid of every process it starts, one a line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

STEMS = ("drums", "bass", "other", "vocals")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser("demucs.separate")
    p.add_argument("tracks", nargs="+", type=Path)
    p.add_argument("-n", "--name", default="htdemucs")
    p.add_argument("-o", "--out", type=Path, default=Path("separated"))
    p.add_argument("--filename", default="{track}/{stem}.{ext}")
    p.add_argument("--two-stems", dest="stem", metavar="STEM")
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("-j", "--jobs", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    args, _unknown = p.parse_known_args(argv)  # other Demucs flags (--shifts, --int24 ...) are accepted
    return args


def record_pid() -> None:
    pidfile = os.environ.get("FAKE_DEMUCS_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{os.getpid()}\n")


def fail() -> int:
    print(
        "Traceback (most recent call last):\n"
        '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
        '  File "demucs/separate.py", line 171, in main\n'
        "    model = get_model_from_args(args)\n"
        "RuntimeError: fake demucs: CUDA error: out of memory while loading model",
        file=sys.stderr,
    )
    return 1


def hang() -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:  # a worker in the same process group, as Demucs' -j workers would be
        record_pid()
        while True:
            time.sleep(3600)
    while True:
        time.sleep(3600)


def crash() -> int:
    sys.stdout.flush()
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
    return 3


def flaky(n: int, args: argparse.Namespace) -> int:
    counter = Path(os.environ["FAKE_DEMUCS_COUNTER"])
    runs = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    return fail() if runs <= n else succeed(args)


def smooth(x, width: int):
    import numpy as np

    kernel = np.ones(width, dtype=np.float64) / width
    return np.stack([np.convolve(x[:, c], kernel, mode="same") for c in range(x.shape[1])], axis=1)


def stem_signals(x) -> dict:
    """Split ``x`` (frames, channels) into four parts that add back up to it."""
    low = smooth(x, 64)
    mid = smooth(x, 8) - low
    high = x - low - mid
    return {"drums": high, "bass": low, "vocals": 0.5 * mid, "other": 0.5 * mid}


def out_path(args: argparse.Namespace, track: Path, stem: str) -> Path:
    name, _, ext = track.name.rpartition(".")
    rel = args.filename.format(track=name or ext, trackext=ext, stem=stem, ext="wav")
    path = args.out / args.name / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def succeed(args: argparse.Namespace, garbage: bool = False) -> int:
    import soundfile as sf

    delay = float(os.environ.get("FAKE_DEMUCS_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    print(f"Separated tracks will be stored in {(args.out / args.name).resolve()}")
    for track in args.tracks:
        if not track.exists():
            print(f"File {track} does not exist. If the path contains spaces, please try again "
                  'after surrounding the entire path with quotes "".', file=sys.stderr)
            continue
        print(f"Separating track {track}")
        if garbage:
            for stem in STEMS:
                out_path(args, track, stem).write_bytes(b"this is not audio, just some bytes\n" * 8)
            continue
        x, sr = sf.read(str(track), always_2d=True, dtype="float64")
        parts = stem_signals(x)
        if args.stem:
            parts = {args.stem: parts[args.stem], f"no_{args.stem}": x - parts[args.stem]}
        for stem, signal_ in parts.items():
            sf.write(str(out_path(args, track, stem)), signal_, sr, subtype="PCM_16")
    return 0


def main(argv: list[str]) -> int:
    record_pid()
    args = parse(argv)
    mode = os.environ.get("FAKE_DEMUCS_MODE", "succeed")
    if mode == "succeed":
        return succeed(args)
    if mode == "fail":
        return fail()
    if mode == "hang":
        return hang()
    if mode == "crash":
        return crash()
    if mode == "garbage":
        return succeed(args, garbage=True)
    if mode.startswith("flaky:"):
        return flaky(int(mode.split(":", 1)[1]), args)
    print(f"fake_demucs: unknown FAKE_DEMUCS_MODE {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
