"""bench/gui_responsiveness.py runs end to end (--quick) and prints its three figures beside their targets.

Nothing here judges a figure against its target (benchmarks print, tests do
not time); it proves the script still drives the real window, controller,
engine and launch path, exits 0 and reports every figure as a number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _figure(text: str, label: str, unit: str) -> float:
    m = re.search(re.escape(label) + r"\s+" + NUMBER + r"\s*" + re.escape(unit), text)
    assert m, f"{label!r} not printed as a number in {unit}; output was:\n{text}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    log = tmp_path_factory.mktemp("gui_bench") / "stderr.txt"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "gui_responsiveness.py"), "--quick"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            stdout, _ = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("bench/gui_responsiveness.py --quick took over 150 s")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{log.read_text()[-3000:]}"
    return stdout


def test_stalls_while_a_batch_runs_are_printed_with_their_target(output):
    longest = _figure(output, "longest GUI stall", "ms")
    p99 = _figure(output, "99th percentile stall", "ms")
    assert p99 <= longest
    assert "target < 50 ms" in output
    assert re.search(r"\b30 done\b", output), output  # every job of the quick batch ran through the window
    flushes = _figure(output, "bridge flushes per second", "/s")
    assert 0 < flushes <= 21  # the bridge coalesces to at most 20 deliveries a second
    assert _figure(output, "engine events per second", "/s") > flushes  # many events per delivery


def test_adding_files_is_timed_for_the_model_and_end_to_end(output):
    assert "Adding 1,000 files to the queue" in output
    assert _figure(output, "(a) model alone, via the bridge", "s") > 0
    assert _figure(output, "(b) end to end, add_paths", "s") > 0
    assert "rows shown" not in output  # all 1,000 rows reached the window's queue
    assert _figure(output, "longest GUI stall in (b)", "ms") >= 0
    assert output.count("target < 1 s") == 2


def test_launch_time_and_heavy_modules_are_reported(output):
    launch = _figure(output, "launch to first paint", "s")
    bare = float(re.search(r"python -c pass " + NUMBER, output).group(1))
    assert launch > bare > 0  # a window takes longer than an empty interpreter
    assert _figure(output, "python -c 'import app.main_window'", "s") > 0
    assert "target < 1.5 s" in output
    built = re.search(r"MainWindow built \(before open\): (.*)$", output, re.M)
    assert built, output
    for module in ("librosa", "numba", "scipy.signal"):
        assert re.search(re.escape(module) + r" (IMPORTED|no)\b", built.group(1)), built.group(1)
