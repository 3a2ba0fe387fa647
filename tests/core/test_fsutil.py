import hashlib
import json
import math
import os
import stat
import unicodedata

import numpy as np
import pytest

from core import fsutil
from core.fsutil import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    safe_song_id,
    safe_stem,
    sha256_file,
)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --- atomic writes ------------------------------------------------------------


def test_bytes_text_json_npy_round_trip_and_leave_only_the_target(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01abc")
    atomic_write_text(tmp_path / "b.txt", "héllo\r\nworld")
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5, "名前"]})
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(tmp_path / "d.npy", arr)

    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01abc"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\r\nworld".encode()
    assert json.loads((tmp_path / "c.json").read_text("utf-8")) == {"a": [1.5, "名前"], "b": 1}
    loaded = np.load(tmp_path / "d.npy", allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, arr)
    assert _listing(tmp_path) == ["a.bin", "b.txt", "c.json", "d.npy"]


def test_json_sorts_keys_turns_nan_and_inf_into_null_and_converts_numpy(tmp_path):
    path = tmp_path / "s.json"
    atomic_write_json(
        path,
        {"z": float("nan"), "a": {"inf": float("inf"), "ninf": -math.inf}, "m": np.float32(0.5),
         "n": np.int64(3), "arr": np.array([1.0, np.nan]), "t": (1, 2)},
    )
    text = path.read_text("utf-8")
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data == {"z": None, "a": {"inf": None, "ninf": None}, "m": 0.5, "n": 3, "arr": [1.0, None], "t": [1, 2]}
    assert list(data) == sorted(data)
    assert text.endswith("\n")


def test_json_with_undecodable_file_name_is_still_valid_utf8(tmp_path):
    name = os.fsdecode(b"take\xff.wav")  # a lone surrogate, as os.listdir gives it
    path = tmp_path / "s.json"
    atomic_write_json(path, {"file": name})
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict: raises if the surrogate leaked through
    assert json.loads(raw)["file"] == name


def test_writer_gets_a_hidden_temp_file_in_the_same_folder_with_the_same_suffix(tmp_path):
    seen = []

    def writer(tmp):
        seen.append(tmp)
        assert tmp.exists()
        tmp.write_bytes(b"data")

    atomic_write_with(tmp_path / "bars.parquet", writer)
    (tmp,) = seen
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".") and ".tmp" in tmp.name and tmp.suffix == ".parquet"
    assert not tmp.exists()
    assert _listing(tmp_path) == ["bars.parquet"]


def test_a_reader_sees_the_old_file_until_the_rename(tmp_path):
    target = tmp_path / "summary.json"
    target.write_bytes(b"old content")

    def writer(tmp):
        with open(tmp, "wb") as f:
            f.write(b"new con")  # half written ...
            f.flush()
            assert target.read_bytes() == b"old content"  # ... and the target is untouched
            f.write(b"tent, longer")

    atomic_write_with(target, writer)
    assert target.read_bytes() == b"new content, longer"


def test_writers_that_infer_the_format_from_the_name(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    tone = np.sin(np.linspace(0, 100, 4410)).astype(np.float32)
    atomic_write_with(tmp_path / "bar_001.flac", lambda p: sf.write(p, tone, 44100))
    table = pa.table({"bar": [1, 2], "start_s": [0.0, 2.1]})
    atomic_write_with(tmp_path / "bars.parquet", lambda p: pq.write_table(table, p))

    assert sf.info(tmp_path / "bar_001.flac").format == "FLAC"
    assert np.allclose(sf.read(tmp_path / "bar_001.flac", dtype="float32")[0], tone, atol=1e-4)
    assert pq.read_table(tmp_path / "bars.parquet").equals(table)
    assert _listing(tmp_path) == ["bar_001.flac", "bars.parquet"]


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path, exc_type):
    target = tmp_path / "x.wav"
    target.write_bytes(b"old")

    def writer(tmp):
        tmp.write_bytes(b"partial")
        raise exc_type("boom")

    with pytest.raises(exc_type):
        atomic_write_with(target, writer)
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["x.wav"]


def test_a_failing_write_of_a_new_file_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        atomic_save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(TypeError):  # not JSON: refused before any file is created
        atomic_write_json(tmp_path / "o.json", {"x": {1, 2}})
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "o.bin", "not bytes")  # type: ignore[arg-type]
    assert _listing(tmp_path) == []


def test_replace_failure_removes_the_temp(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "a.txt", "x")
    assert _listing(tmp_path) == []


def test_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(fsutil.os, "fsync", spy)
    atomic_write_bytes(tmp_path / "a", b"1")
    atomic_write_with(tmp_path / "b", lambda p: p.write_bytes(b"2"))
    if os.name == "posix":
        assert synced == [False, True, False, True]
    else:
        assert synced.count(False) == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_files_get_the_usual_permissions(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    atomic_write_bytes(tmp_path / "atomic", b"")
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("atomic") == mode("plain")


def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path):
    data = os.urandom(1000)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=7) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


# --- song ids -----------------------------------------------------------------

HOSTILE = [
    "../../etc/passwd",
    "CON",
    "con.wav",
    "LPT1.mp3",
    "名前.wav",
    os.fsdecode(b"\xff\xfe.wav"),
    b"\xff\xfe.wav",
    "x" * 300 + ".wav",
    ".wav",
    "..",
    ".",
    "-rf --no-preserve-root.wav",
    "a:b|c?*<>\"d.flac",
    "tab\there\nnewline.wav",
    "Café Déjà vu.flac",
    "C:\\music\\take1.wav",
    "   .wav",
]


def _is_safe(song_id: str) -> bool:
    stem = song_id.rsplit("-", 1)[0]
    return (
        0 < len(song_id) <= 70
        and song_id not in (".", "..")
        and not song_id.startswith(("-", "."))
        and all(ch.isalnum() or ch in "-_" for ch in song_id)
        and stem.upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}
        and unicodedata.normalize("NFC", song_id) == song_id
    )


def test_hostile_names_give_safe_distinct_ids():
    ids = [safe_song_id(name, hashlib.sha256(repr(name).encode()).hexdigest()) for name in HOSTILE]
    for name, song_id in zip(HOSTILE, ids):
        assert _is_safe(song_id), (name, song_id)
        song_id.encode("utf-8")  # no lone surrogates
    assert len(set(ids)) == len(ids)


def test_song_id_shape_and_examples():
    h = "0123456789abcdef" * 4
    assert safe_song_id("/music/take1.wav", h) == "take1-01234567"
    assert safe_song_id("../../etc/passwd", h) == "passwd-01234567"
    assert safe_song_id("CON", h) == "_CON-01234567"
    assert safe_song_id("名前.wav", h) == "名前-01234567"
    assert safe_song_id("Café Déjà vu (live).flac", h) == "Cafe_Deja_vu_live-01234567"
    assert safe_song_id(".wav", h) == "audio-01234567"
    assert safe_song_id(b"\xff\xfe.wav", h) == "audio-01234567"
    assert len(safe_stem("y" * 300 + ".wav")) == 60
    assert safe_song_id("A.WAV", h.upper()) == "A-01234567"


def test_two_take1_files_with_different_content_never_collide(tmp_path):
    for i, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "take1.wav").write_bytes(bytes([i]) * 10)
    ids = {safe_song_id(p, sha256_file(p)) for p in tmp_path.glob("*/take1.wav")}
    assert len(ids) == 2 and all(i.startswith("take1-") for i in ids)


@pytest.mark.parametrize("bad", ["", "abc", "xyz123456", "0123456"])
def test_song_id_needs_a_hex_hash(bad):
    with pytest.raises(ValueError, match="content_hash"):
        safe_song_id("a.wav", bad)
