"""Logging: the file, idempotent handlers, rotation, quiet third parties and a cheap tail."""

import io
import logging
import logging.handlers
import os

import pytest

import core.logs
from core.logs import BACKUP_COUNT, MAX_BYTES, log_file_path, remove_logging, setup_logging, tail_log


@pytest.fixture(autouse=True)
def clean_root_logging(monkeypatch, tmp_path):
    monkeypatch.setenv("STAVE_LOG_DIR", str(tmp_path / "default-logs"))
    root = logging.getLogger()
    level = root.level
    noisy = {n: logging.getLogger(n).level for n in core.logs.NOISY_LOGGERS}
    yield
    remove_logging()
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


def _ours(kind=None):
    hs = [h for h in logging.getLogger().handlers if getattr(h, "_stave_handler", None)]
    return [h for h in hs if kind is None or h._stave_handler == kind]


def _flush():
    for h in _ours():
        h.flush()


def test_creates_the_log_file_with_a_readable_format(tmp_path):
    path = setup_logging("INFO", log_dir=tmp_path / "logs", console=False)
    assert path == tmp_path / "logs" / "stave.log" and path.is_file()
    logging.getLogger("stave.test").info("hello %s", "there")
    logging.getLogger("stave.test").debug("not at INFO")
    _flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert " INFO     stave.test [MainThread] hello there" in lines[0]
    assert lines[0][:4].isdigit() and lines[0][4] == "-"  # starts with the date


def test_default_log_dir_comes_from_the_user_folders(tmp_path):
    assert log_file_path() == tmp_path / "default-logs" / "stave.log"  # before setup: where it will be
    path = setup_logging(console=False)
    assert path == tmp_path / "default-logs" / "stave.log" and path.is_file()


def test_idempotent_and_reconfigurable(tmp_path):
    before = [h for h in logging.getLogger().handlers if not getattr(h, "_stave_handler", None)]
    setup_logging(log_dir=tmp_path / "a")
    setup_logging(log_dir=tmp_path / "a")
    assert len(_ours("file")) == 1 and len(_ours("console")) == 1
    assert sum(1 for f in logging.getLogger().filters if getattr(f, "_stave_handler", None)) == 1
    second = setup_logging(log_dir=tmp_path / "b", console=False)
    assert len(_ours()) == 1 and log_file_path() == second == tmp_path / "b" / "stave.log"
    # Other people's handlers (pytest's capture) are left alone.
    assert [h for h in logging.getLogger().handlers if not getattr(h, "_stave_handler", None)] == before
    remove_logging()
    assert _ours() == []


def test_rotation_parameters_and_rotation(tmp_path):
    setup_logging(log_dir=tmp_path, console=False)
    (handler,) = _ours("file")
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.maxBytes, handler.backupCount) == (MAX_BYTES, BACKUP_COUNT) == (5 * 1024 * 1024, 5)
    setup_logging(log_dir=tmp_path, console=False, max_bytes=2000, backup_count=2)
    log = logging.getLogger("stave.rotate")
    for i in range(200):
        log.warning("line %04d %s", i, "x" * 40)
    _flush()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["stave.log", "stave.log.1", "stave.log.2"]
    assert tail_log(1, tmp_path / "stave.log")[0].endswith("line 0199 " + "x" * 40)


def test_console_shows_warnings_unless_verbose(tmp_path, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging("DEBUG", log_dir=tmp_path)
    log = logging.getLogger("stave.console")
    log.info("quiet info")
    log.warning("loud warning")
    assert "loud warning" in err.getvalue() and "quiet info" not in err.getvalue()
    setup_logging("DEBUG", log_dir=tmp_path, verbose=True)
    log.debug("verbose debug")
    assert "verbose debug" in err.getvalue()
    _flush()
    assert "quiet info" in (tmp_path / "stave.log").read_text(encoding="utf-8")


def test_noisy_third_parties_are_quieted(tmp_path, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging("DEBUG", log_dir=tmp_path)
    assert logging.getLogger("numba").level == logging.WARNING
    assert not logging.getLogger("numba.core.ssa").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("matplotlib").level == logging.WARNING
    # basic_pitch warns on the root logger at import: demoted to INFO (in the file, not on the console).
    record = logging.getLogger().makeRecord(
        "root", logging.WARNING, os.path.join(os.sep, "site-packages", "basic_pitch", "__init__.py"), 29,
        "Coremltools is not installed.", (), None)
    logging.getLogger().handle(record)
    logging.getLogger().warning("a real warning")
    _flush()
    assert "Coremltools" not in err.getvalue() and "a real warning" in err.getvalue()
    assert "INFO     root [MainThread] Coremltools" in (tmp_path / "stave.log").read_text(encoding="utf-8")


def test_unknown_level_is_refused(tmp_path):
    with pytest.raises(ValueError, match="level: unknown logging level 'LOUD'"):
        setup_logging("LOUD", log_dir=tmp_path)
    assert _ours() == []


# --- tail_log ----------------------------------------------------------------------


def test_tail_log_small_cases(tmp_path):
    p = tmp_path / "x.log"
    assert tail_log(5, tmp_path / "missing.log") == []
    p.write_bytes(b"")
    assert tail_log(5, p) == []
    p.write_bytes(b"a\nb\nc\n")
    assert tail_log(2, p) == ["b", "c"] and tail_log(10, p) == ["a", "b", "c"] and tail_log(0, p) == []
    p.write_bytes("a\r\nb\r\nlast, no newline \u00e9".encode())
    assert tail_log(2, p, block_size=3) == ["b", "last, no newline \u00e9"]


def test_tail_log_reads_only_the_end_of_a_big_log(tmp_path, monkeypatch):
    p = tmp_path / "big.log"
    with open(p, "w", encoding="utf-8") as f:
        for i in range(100_000):
            f.write(f"2024-01-01 00:00:00.000 INFO     stave [MainThread] message number {i}\n")
    size = p.stat().st_size
    read = []

    class Spy(io.FileIO):
        def read(self, n=-1):
            data = super().read(n)
            read.append(len(data))
            return data

    def spy_open(path, mode="r", *a, **kw):
        assert mode == "rb"
        return Spy(path, "rb")

    monkeypatch.setattr(core.logs, "open", spy_open, raising=False)
    lines = tail_log(1000, p)
    assert lines == [f"2024-01-01 00:00:00.000 INFO     stave [MainThread] message number {i}"
                     for i in range(99_000, 100_000)]
    assert 0 < sum(read) < size / 20  # ~1% of the file, not all of it
    assert tail_log(3, p, block_size=7) == [f"2024-01-01 00:00:00.000 INFO     stave [MainThread] message number {i}"
                                             for i in (99_997, 99_998, 99_999)]


def test_tail_log_defaults_to_the_configured_file(tmp_path):
    setup_logging(log_dir=tmp_path, console=False)
    for i in range(5):
        logging.getLogger("stave.tail").warning("event %d", i)
    _flush()
    assert [line.rsplit(" ", 1)[-1] for line in tail_log(2)] == ["3", "4"]


_CRASHER = """
import os, sys, faulthandler
sys.path.insert(0, {root!r})
from core.logs import enable_crash_traces
path = enable_crash_traces(sys.argv[1])
print(path, flush=True)
if sys.argv[2] == "crash":
    faulthandler._sigsegv()  # what a bug in a C extension does
"""


def _run_crasher(log_dir, how):
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-c", _CRASHER.format(root=root), str(log_dir), how],
                          capture_output=True, text=True, timeout=60)


def test_a_native_crash_leaves_every_threads_stack_in_the_log_folder(tmp_path):
    proc = _run_crasher(tmp_path, "crash")
    assert proc.returncode != 0
    [crash] = list(tmp_path.glob("crash-*.log"))
    assert crash.name == f"crash-{proc.stdout.strip().rsplit('crash-', 1)[1]}"
    text = crash.read_text()
    assert "Segmentation fault" in text and "<string>" in text  # the fault and the Python line that caused it


def test_a_clean_exit_leaves_no_crash_file_and_stale_empty_ones_are_swept(tmp_path):
    (tmp_path / "crash-999999999.log").write_text("")  # left by a process killed outright: no such pid now
    (tmp_path / "crash-999999998.log").write_text("Fatal Python error: Aborted\n")  # a real crash: kept
    proc = _run_crasher(tmp_path, "exit")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.glob("crash-*.log")] == ["crash-999999998.log"]


def test_an_unwritable_log_folder_turns_crash_traces_off_quietly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert core.logs.enable_crash_traces(blocker / "logs") is None
