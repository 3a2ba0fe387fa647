"""The benchmark scripts run end to end on a tiny corpus (--quick) and print their figures.

Nothing here judges the figures against their targets (benchmarks print,
they do not assert timings); it proves the scripts still run against the
current pipeline and engine, exit 0 and report every figure as a number.
The scripts run one after the other: at once, on two cores, they only slow
each other down. They share a numba cache kept between test sessions (the
session's own, fresh one would make every run compile librosa's beat tracker
and pYIN again, a minute or more): only the first run ever pays for it.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _figure(text: str, label: str, unit: str = "") -> float:
    m = re.search(re.escape(label) + r"\s*:?\s+[+]?" + NUMBER + re.escape(unit), text)
    assert m, f"{label!r} not printed as a number; output was:\n{text}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    cache = Path(tempfile.gettempdir()) / f"stave-bench-numba-{getpass.getuser()}"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    out = {}
    for name in ("throughput", "scaling"):
        try:
            proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick"], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bench/{name}.py --quick took over 240 s")
        assert proc.returncode == 0, f"bench/{name}.py --quick exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        out[name] = proc.stdout
    return out


def test_throughput_prints_both_sides_and_their_ratio(outputs):
    text = outputs["throughput"]
    stave = re.search(r"\(a\) Stave stages.*?" + NUMBER + r"\s+" + NUMBER + r"\s*$", text, re.M)
    naive = re.search(r"\(b\) naive librosa script\s+" + NUMBER + r"\s+" + NUMBER + r"\s*$", text, re.M)
    assert stave and naive, text
    stave_x, naive_x = float(stave.group(2)), float(naive.group(2))
    assert stave_x > 0 and naive_x > 0
    ratio = _figure(text, "ratio (a)/(b)", "x")
    assert ratio == pytest.approx(stave_x / naive_x, rel=0.05)  # the ratio is of the two printed figures
    assert "target >= 2x" in text
    assert _figure(text, "stage functions, warm numba cache", " s") > 0
    assert _figure(text, "Engine.run, 1 worker, warm numba cache", " s") > 0
    assert "peak memory, long file: skipped (--quick)" in text
    # one row per corpus file, each with a tempo from both sides
    assert len(re.findall(r"^  song\d\d_.*\|", text, re.M)) == 2


def test_scaling_prints_every_figure_beside_its_target(outputs):
    text = outputs["scaling"]
    for label in ("engine, 1 worker (Engine.run)", "engine, 2 workers (Engine.run)",
                  "stage functions in a loop, this process (1 core)", "stage functions in 2 plain processes, warm",
                  "`stave process --workers 1`, fresh process", "stage functions in a loop, fresh process",
                  "naive librosa script, this process"):
        m = re.search(re.escape(label) + r".*?\s+" + NUMBER + r"\s+" + NUMBER + r"\s*$", text, re.M)
        assert m and float(m.group(2)) > 0, f"{label!r} missing:\n{text}"
    assert _figure(text, "2 workers vs 1 worker, jobs phase (throughput)", "x") > 0
    assert _figure(text, "whole Engine.run, with the one-off start and end", "x") > 0
    assert _figure(text, "the stage functions in 2 plain processes vs 1 loop", "x") > 0
    assert _figure(text, "engine, 2 workers vs naive script on 1 core", "x") > 0
    assert re.search(r"overhead of the policies and the store, 1 worker\s+[+-][0-9.]+%\s+< 3%", text), text
    assert re.search(r"whole command from a standing start\s+[+-][0-9.]+%", text), text
    assert _figure(text, "resume 100 done jobs (open + run to BatchFinished)", " s") > 0
    for target in (">= 1.8x", ">= 3x", "< 3%", "< 2 s"):
        assert target in text
