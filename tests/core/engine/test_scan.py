"""Scanning inputs: real folders, links, pipes, odd names, impostors and duplicates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.engine.scan import content_fingerprint, display_path, scan
from core.engine.scan_sniff import check, sniff
from core.resilience.cancel import CancelToken
from core.resilience.errors import Cancelled

ROOT = Path(__file__).resolve().parents[3]


def _audio(path: Path, seed: int, seconds: float = 0.05, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, rng.uniform(-0.5, 0.5, int(8000 * seconds)).astype(np.float32), 8000, format=fmt)
    return path


def _names(result, root: Path) -> list[str]:
    return [os.path.relpath(f.path, root) for f in result.files]


def _reasons(result, root: Path) -> dict[str, str]:
    return {os.path.relpath(s.path, root): s.reason for s in result.skipped}


def test_nested_folders_in_sorted_order_and_arguments_in_given_order(tmp_path):
    for rel, seed in [("b/z.wav", 1), ("b/a/2.wav", 2), ("b/a/1.flac", 3), ("b/M.wav", 4), ("a/x.wav", 5)]:
        _audio(tmp_path / rel, seed)
    (tmp_path / "b" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not scanned")
    (tmp_path / "b" / "notes.txt").write_text("liner notes")
    result = scan([tmp_path / "b", str(tmp_path / "a")])
    assert _names(result, tmp_path) == ["b/a/1.flac", "b/a/2.wav", "b/M.wav", "b/z.wav", "a/x.wav"]
    assert result.skipped == [] and result.duplicates == [] and result.ignored == 2
    first = result.files[0]
    assert (first.ext, first.container, first.size) == (".flac", "flac", (tmp_path / "b/a/1.flac").stat().st_size)
    assert all(os.path.isabs(f.path) for f in result.files)
    assert scan([tmp_path / "b", tmp_path / "a"]) == result  # deterministic


def test_relative_arguments_become_absolute(tmp_path, monkeypatch):
    _audio(tmp_path / "in" / "a.wav", 1)
    monkeypatch.chdir(tmp_path)
    assert [f.path for f in scan(["in"]).files] == [str(tmp_path / "in" / "a.wav")]


def test_symlink_loop_terminates_and_linked_files_count_once(tmp_path):
    music = tmp_path / "music"
    _audio(music / "sub" / "a.wav", 1)
    os.symlink(music, music / "sub" / "back-to-top")  # a loop
    os.symlink(music / "sub" / "a.wav", music / "link.wav")
    os.symlink(tmp_path / "nowhere.wav", music / "broken.wav")
    elsewhere = _audio(tmp_path / "elsewhere" / "e.wav", 2)
    os.symlink(elsewhere.parent, music / "linked-folder")
    result = scan([music])
    # sorted: broken.wav, link.wav, linked-folder/, sub/ -- the link comes first, so it is the one kept
    assert _names(result, music) == ["link.wav", "linked-folder/e.wav"]
    assert result.duplicates == [(str(music / "sub" / "a.wav"), str(music / "link.wav"))]
    reasons = _reasons(result, music)
    assert reasons["broken.wav"] == "broken link"
    assert "already scanned" in reasons["sub/back-to-top"]


@pytest.mark.timeout(20)
def test_a_fifo_is_reported_and_never_opened(tmp_path):
    _audio(tmp_path / "real.wav", 1)
    os.mkfifo(tmp_path / "pipe.wav")  # opening it for reading would block forever
    os.mkfifo(tmp_path / "fifo-no-ext")
    result = scan([tmp_path, tmp_path / "fifo-no-ext"])
    assert _names(result, tmp_path) == ["real.wav"]
    reasons = _reasons(result, tmp_path)
    assert reasons == {"pipe.wav": "a named pipe, not a file (not opened)",
                       "fifo-no-ext": "a named pipe, not a file (not opened)"}


_UNREADABLE_CHILD = r"""
import json, os, sys
from core.engine.scan import scan
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
result = scan([sys.argv[1]])
print(json.dumps({"files": [f.path for f in result.files], "skipped": [[s.path, s.reason] for s in result.skipped]}))
"""


def _scan_unprivileged(root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", _UNREADABLE_CHILD, str(root)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        pytest.skip(f"cannot drop privileges to run this case: {run.stderr.strip()[-200:]}")
    return json.loads(run.stdout)


def test_an_unreadable_folder_is_reported_and_the_scan_goes_on(tmp_path):
    # Root reads any folder, so as root the scan runs in a child that drops to nobody; the
    # folder then lives under /tmp (pytest's tmp_path is private to root).
    root = Path(tempfile.mkdtemp(prefix="stave-scan-")) if os.geteuid() == 0 else tmp_path
    try:
        root.chmod(0o755)
        for rel, seed in [("a/one.wav", 1), ("locked/secret.wav", 2), ("z/two.wav", 3)]:
            _audio(root / rel, seed)
            (root / rel).chmod(0o644)
            (root / rel).parent.chmod(0o755)
        (root / "locked").chmod(0o000)
        if os.geteuid() == 0:
            out = _scan_unprivileged(root)
            files, skipped = out["files"], [tuple(s) for s in out["skipped"]]
        else:
            result = scan([root])
            files, skipped = [f.path for f in result.files], [(s.path, s.reason) for s in result.skipped]
        assert files == [str(root / "a" / "one.wav"), str(root / "z" / "two.wav")]
        assert skipped == [(str(root / "locked"), "cannot read folder: permission denied")]
    finally:
        (root / "locked").chmod(0o755)
        if root != tmp_path:
            shutil.rmtree(root)


def test_a_non_utf8_file_name(tmp_path, capsys):
    wav = _audio(tmp_path / "model.wav", 1).read_bytes()
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.wav"
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, wav)
    os.close(fd)
    (tmp_path / "model.wav").unlink()
    (found,) = scan([tmp_path]).files
    assert os.fsencode(found.path) == raw and found.container == "wav"
    shown = display_path(found.path)
    assert shown.endswith("caf\\xe9 \\xff.wav")
    print(shown)
    shown.encode("ascii")  # printable anywhere
    assert display_path(b"/a/new\nline.wav") == "/a/new\\nline.wav"
    assert display_path("/a/café.wav") == "/a/café.wav"


def test_duplicate_content_keeps_the_first(tmp_path):
    original = _audio(tmp_path / "1" / "take.wav", 1)
    (tmp_path / "2").mkdir()
    shutil.copy(original, tmp_path / "2" / "take.wav")
    _audio(tmp_path / "3" / "same-size.wav", 2)  # same length, different noise
    assert (tmp_path / "3" / "same-size.wav").stat().st_size == original.stat().st_size
    os.link(original, tmp_path / "3" / "hardlink.wav")
    result = scan([tmp_path / "2", tmp_path / "1", tmp_path / "3"])
    assert _names(result, tmp_path) == ["2/take.wav", "3/same-size.wav"]
    assert result.duplicates == [
        (str(tmp_path / "3" / "hardlink.wav"), str(tmp_path / "1" / "take.wav")),  # the same file again
        (str(tmp_path / "1" / "take.wav"), str(tmp_path / "2" / "take.wav")),  # the same content
    ]


def test_large_files_equal_at_both_ends_are_compared_in_full(tmp_path):
    header = (_audio(tmp_path / "h.wav", 1)).read_bytes()[:44]
    body = np.random.default_rng(0).bytes(3 << 20)
    a = tmp_path / "a.wav"
    a.write_bytes(header + body)
    changed = bytearray(body)
    changed[len(body) // 2] ^= 0xFF  # differs only in the middle
    (tmp_path / "b.wav").write_bytes(header + bytes(changed))
    shutil.copy(a, tmp_path / "c.wav")
    (tmp_path / "h.wav").unlink()
    assert content_fingerprint(a) == content_fingerprint(tmp_path / "b.wav")  # the quick hash cannot tell
    result = scan([tmp_path])
    assert _names(result, tmp_path) == ["a.wav", "b.wav"]
    assert result.duplicates == [(str(tmp_path / "c.wav"), str(a))]


def _pcm16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit WAV: a 44-byte header, then the samples, so the first 64 bytes hold 10 of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples.astype(np.int16), 8000, subtype="PCM_16")
    return path


@pytest.fixture
def reads(monkeypatch):
    """The paths each duplicate step opens again, by step."""
    import core.engine.scan as scan_module

    seen: dict[str, list[str]] = {"middle": [], "quick": [], "full": []}
    for step, name in (("middle", "_middle_sample"), ("quick", "content_fingerprint"), ("full", "_full_hash")):
        real = getattr(scan_module, name)

        def spy(path, *args, _real=real, _step=step):
            seen[_step].append(os.path.basename(path))
            return _real(path, *args)
        monkeypatch.setattr(scan_module, name, spy)
    return seen


def test_same_size_files_that_start_differently_are_not_opened_again(tmp_path, reads):
    rng = np.random.default_rng(3)
    for i in range(3):  # 8 samples: 60 bytes, the content check read all of it
        _pcm16(tmp_path / f"tiny{i}.wav", rng.integers(-9000, 9000, 8))
    shutil.copy(tmp_path / "tiny1.wav", tmp_path / "tiny1 copy.wav")
    for i in range(3):  # 1 s: the same size, different first samples
        _pcm16(tmp_path / f"long{i}.wav", rng.integers(-9000, 9000, 8000))
    shutil.copy(tmp_path / "long2.wav", tmp_path / "long2 copy.wav")
    result = scan([tmp_path])
    assert _names(result, tmp_path) == ["long0.wav", "long1.wav", "long2 copy.wav", "tiny0.wav", "tiny1 copy.wav",
                                        "tiny2.wav"]
    assert result.duplicates == [(str(tmp_path / "long2.wav"), str(tmp_path / "long2 copy.wav")),
                                 (str(tmp_path / "tiny1.wav"), str(tmp_path / "tiny1 copy.wav"))]
    # only the pair that is the same is read again (its heads match); a 60-byte file never is
    assert reads == {"middle": ["long2 copy.wav", "long2.wav"], "quick": ["long2 copy.wav", "long2.wav"],
                     "full": []}


@pytest.mark.parametrize("n, quick", [(1000, []), (16000, ["a.wav", "c.wav", "d.wav"])])
def test_same_size_files_that_start_the_same_are_told_apart_by_the_rest(tmp_path, reads, n, quick):
    rng = np.random.default_rng(4)
    silence = np.zeros(n // 8, dtype=np.int16)  # a silent start: the first 64 bytes are all the same
    a = _pcm16(tmp_path / "a.wav", np.concatenate([silence, rng.integers(-9000, 9000, n - n // 8)]))
    _pcm16(tmp_path / "b.wav", np.concatenate([silence, rng.integers(-9000, 9000, n - n // 8)]))
    shutil.copy(a, tmp_path / "c.wav")
    changed = bytearray(a.read_bytes())
    changed[-1] ^= 0x01  # the same as a.wav but for its very last byte
    (tmp_path / "d.wav").write_bytes(bytes(changed))
    result = scan([tmp_path])
    assert _names(result, tmp_path) == ["a.wav", "b.wav", "d.wav"]
    assert result.duplicates == [(str(tmp_path / "c.wav"), str(a))]
    assert reads["middle"] == ["a.wav", "b.wav", "c.wav", "d.wav"]
    # 2 KiB: the 4 KiB from the middle was the whole file; 32 KiB: b.wav differed there, the rest is hashed
    assert reads["quick"] == quick and reads["full"] == []


def test_cancel_stops_the_duplicate_search(tmp_path, monkeypatch):
    import core.engine.scan as scan_module

    silent = np.zeros(4000, dtype=np.int16)  # same size and head: the search must read them again
    for i in range(4):
        _pcm16(tmp_path / f"{i}.wav", silent)
    token, read = CancelToken(), []
    real = scan_module._middle_sample

    def read_then_cancel(path, size):
        read.append(path)
        token.cancel("user closed the window")
        return real(path, size)
    monkeypatch.setattr(scan_module, "_middle_sample", read_then_cancel)
    with pytest.raises(Cancelled, match="closed the window"):
        scan([tmp_path], cancel=token)
    assert len(read) == 1


def test_a_file_swapped_after_it_was_looked_at_is_not_read(tmp_path):
    from core.engine.scan import _Walk

    real = _audio(tmp_path / "a.wav", 1)
    os.mkfifo(tmp_path / "pipe.wav")  # were it read, this test would hang (and time out)
    other = _audio(tmp_path / "b.wav", 2)
    walk = _Walk(extensions=frozenset({".wav"}), excluded=set(), cancel=None)
    walk.read_head(str(tmp_path / "pipe.wav"), ".wav", None, None)  # the listing said "regular file"
    st = real.stat()
    walk.read_head(str(other), ".wav", st.st_dev, st.st_ino)  # a link retargeted since it was followed
    walk.read_head(str(real), ".wav", st.st_dev, st.st_ino)
    assert [s.reason for s in walk.skipped] == ["changed while it was being scanned"] * 2
    assert [f.path for f in walk.files] == [str(real)] and walk.files[0].size == st.st_size


def test_impostors_are_reported_with_what_they_look_like(tmp_path):
    (tmp_path / "notes.wav").write_text("This is not audio, it is a shopping list.\nmilk\neggs\n")
    (tmp_path / "cover.mp3").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (tmp_path / "noise.flac").write_bytes(bytes([0, 1, 2, 250, 251]) * 30)
    (tmp_path / "empty.wav").touch()
    real = _audio(tmp_path / "wav-named.m4a", 1, fmt="WAV")  # audio in another container: decoders cope
    result = scan([tmp_path, tmp_path / "missing.wav", tmp_path / "readme.txt"])
    assert _names(result, tmp_path) == ["wav-named.m4a"] and result.files[0].container == "wav"
    assert result.files[0].path == str(real)
    assert _reasons(result, tmp_path) == {
        "notes.wav": "not an audio file: looks like a text file",
        "cover.mp3": "not an audio file: looks like a PNG image",
        "noise.flac": "not an audio file (its content is not .flac)",
        "empty.wav": "empty file (0 bytes)",
        "missing.wav": "not found",
        "readme.txt": "not found",
    }
    (tmp_path / "readme.txt").write_text("hi")
    assert _reasons(scan([tmp_path / "readme.txt"]), tmp_path) == {"readme.txt": "unsupported file type .txt"}


def test_hidden_entries_and_output_folders_are_left_alone(tmp_path):
    _audio(tmp_path / "in" / "song.wav", 1)
    _audio(tmp_path / "in" / ".hidden.wav", 2)
    _audio(tmp_path / "in" / "._song.wav", 3)
    _audio(tmp_path / "in" / ".cache" / "x.wav", 4)
    out = tmp_path / "in" / "results"
    _audio(out / "song-1a2b" / "stems" / "drums.wav", 5)
    (out / ".stave").mkdir()
    (out / ".stave" / "state.db").write_bytes(b"")
    other = tmp_path / "in" / "zz-other-output"
    _audio(other / "bass.wav", 6)
    result = scan([tmp_path / "in"], exclude=[other])
    assert _names(result, tmp_path) == ["in/song.wav"]
    assert _reasons(result, tmp_path) == {"in/results": "a Stave output folder",
                                          "in/zz-other-output": "the output folder"}
    assert scan([tmp_path / "in" / ".hidden.wav"]).files[0].path.endswith(".hidden.wav")  # named: taken


def test_custom_extensions_and_cancel(tmp_path):
    _audio(tmp_path / "a.wav", 1)
    _audio(tmp_path / "b.flac", 2)
    assert _names(scan([tmp_path], extensions=["FLAC"]), tmp_path) == ["b.flac"]
    token = CancelToken()
    token.cancel("user closed the window")
    with pytest.raises(Cancelled, match="closed the window"):
        scan([tmp_path], cancel=token)


@pytest.fixture
def many_files_dir(tmp_path):
    """A RAM-backed folder when there is one: creating 10,000 files on a busy disk takes longer than scanning them."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="stave-scan-", dir="/dev/shm"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_ten_thousand_files_scan_quickly(tmp_path, many_files_dir):
    header = _audio(tmp_path / "h.wav", 1).read_bytes()
    for d in range(20):
        folder = many_files_dir / f"album {d:02d}"
        folder.mkdir()
        for i in range(500):
            n = d * 500 + i
            # only 700 distinct sizes: every file goes through the size groups and the quick hash
            (folder / f"{i:03d}.wav").write_bytes(header + n.to_bytes(4, "little") + bytes(n % 700))
    t0 = time.perf_counter()
    result = scan([many_files_dir])
    elapsed = time.perf_counter() - t0
    print(f"\nscan of 10,000 files: {elapsed:.2f} s")
    assert len(result.files) == 10_000 and result.duplicates == [] and result.skipped == []
    assert elapsed < 30


HEADS = {
    "wav": b"RIFF\x24\x08\x00\x00WAVEfmt ",
    "rf64": b"RF64\xff\xff\xff\xffWAVEds64",
    "flac": b"fLaC\x00\x00\x00\x22",
    "vorbis": b"OggS\x00\x02" + bytes(20) + b"\x01\x1e\x01vorbis",
    "opus": b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead",
    "id3": b"ID3\x04\x00\x00\x00\x00\x01\x00",
    "mpeg": b"\xff\xfb\x90\x64" + bytes(10),
    "m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00",
    "adts": b"\xff\xf1\x50\x80\x02\x1f\xfc",
    "adif": b"ADIF\x00\x00",
    "asf": bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C") + bytes(8),
    "aiff": b"FORM\x00\x00\x10\x00AIFFCOMM",
    "aifc": b"FORM\x00\x00\x10\x00AIFCFVER",
}


@pytest.mark.parametrize("name, ext, container", [
    ("wav", ".wav", "wav"), ("rf64", ".wav", "wav"), ("flac", ".flac", "flac"), ("vorbis", ".ogg", "ogg"),
    ("opus", ".opus", "opus"), ("id3", ".mp3", "id3"), ("mpeg", ".mp3", "mp3"), ("m4a", ".m4a", "mp4"),
    ("adts", ".aac", "aac"), ("adif", ".aac", "aac"), ("asf", ".wma", "asf"), ("aiff", ".aif", "aiff"),
    ("aifc", ".aifc", "aiff"),
])
def test_sniff_recognises_audio_containers(name, ext, container):
    verdict = check(HEADS[name], ext)
    assert verdict.ok and verdict.container == container


@pytest.mark.parametrize("head, looks_like", [
    (b"RIFF\x00\x00\x00\x00AVI LIST", "an AVI video"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", "an HEIF/AVIF image"),
    (b"MThd\x00\x00\x00\x06", "a MIDI file (notes, not audio)"),
    (b"PK\x03\x04\x14\x00", "a ZIP archive"),
    (b"<!DOCTYPE html><html>", "an HTML/XML document"),
    ("título de la canción\n".encode(), "a text file"),
    ("\ufeffhello".encode("utf-16-le"), "a text file (UTF-16)"),
    (b"\xff\xff\xff\xff", "unknown"),  # a frame sync with invalid fields is not MPEG audio
    (b"", "an empty file"),
])
def test_sniff_names_impostors(head, looks_like):
    assert sniff(head) == looks_like
    assert not check(head, ".wav").ok
