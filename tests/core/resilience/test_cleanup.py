"""TempPaths and remove_stale_temps on a real file system."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from core.resilience.cleanup import TempPaths, remove_stale_temps
from tests.core.resilience import fixtures_errors as fx


class Boom(Exception):
    pass


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "work"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "precious"
    o.mkdir()
    (o / "keep.txt").write_text("do not touch")
    return o


def _make_temps(temps: TempPaths) -> list[Path]:
    f = temps.mkstemp(".npy")
    d = temps.mkdtemp("stage-")
    (d / "inner.json").write_text("{}")
    (d / "sub").mkdir()
    later = temps.track("later.tmp")  # tracked before it exists
    later.write_text("x")
    return [f, d, later]


def test_error_removes_temps_and_keeps_the_original_exception(root: Path):
    with pytest.raises(Boom, match="stage failed"):
        with TempPaths(root) as temps:
            made = _make_temps(temps)
            assert all(p.exists() for p in made) and all(p.parent == root for p in made)
            raise Boom("stage failed")
    assert not any(p.exists() for p in made)
    assert root.is_dir() and list(root.iterdir()) == []
    assert temps.failures == []


def test_success_keeps_temps_by_default(root: Path):
    with TempPaths(root) as temps:
        made = _make_temps(temps)
    assert all(p.exists() for p in made)


def test_flags_choose_when_to_remove(root: Path):
    with TempPaths(root, on_error=True, on_success=True) as temps:
        made = _make_temps(temps)
    assert not any(p.exists() for p in made)
    with pytest.raises(Boom):
        with TempPaths(root, on_error=False) as temps:
            made = _make_temps(temps)
            raise Boom()
    assert all(p.exists() for p in made)


def test_cancellation_counts_as_an_error(root: Path):
    from core.resilience.errors import Cancelled

    with pytest.raises(Cancelled):
        with TempPaths(root) as temps:
            f = temps.mkstemp()
            raise Cancelled("paused")
    assert not f.exists()


def test_kept_paths_survive_an_error(root: Path):
    with pytest.raises(Boom):
        with TempPaths(root) as temps:
            result = temps.mkdtemp("result-")
            scratch = temps.mkstemp()
            temps.keep(result)
            raise Boom()
    assert result.is_dir() and not scratch.exists()


def test_refuses_paths_outside_the_root(root: Path, outside: Path):
    temps = TempPaths(root)
    for bad in [outside / "keep.txt", root / ".." / "precious" / "keep.txt", "../precious/keep.txt",
                root, ".", root.parent, "/", "", "sub/.."]:
        with pytest.raises(ValueError):
            temps.track(bad)
    with pytest.raises(ValueError):
        temps.mkstemp(dir=outside)
    assert temps.paths == ()


def test_refuses_symlinks_that_escape(root: Path, outside: Path):
    (root / "link-to-file").symlink_to(outside / "keep.txt")
    (root / "link-to-dir").symlink_to(outside, target_is_directory=True)
    temps = TempPaths(root)
    for bad in ["link-to-file", "link-to-dir", "link-to-dir/keep.txt", root / "link-to-dir" / "new.tmp"]:
        with pytest.raises(ValueError, match="refusing"):
            temps.track(bad)
    assert (outside / "keep.txt").read_text() == "do not touch"


def test_symlink_inside_the_root_is_removed_as_a_link(root: Path):
    target = root / "real-result"
    target.mkdir()
    (target / "data.npy").write_bytes(b"123")
    (root / "alias").symlink_to(target, target_is_directory=True)
    with pytest.raises(Boom):
        with TempPaths(root) as temps:
            temps.track("alias")
            raise Boom()
    assert not (root / "alias").exists() and not (root / "alias").is_symlink()
    assert (target / "data.npy").read_bytes() == b"123"


def test_root_given_through_a_symlink(tmp_path: Path, root: Path):
    via = tmp_path / "via"
    via.symlink_to(root, target_is_directory=True)
    with pytest.raises(Boom):
        with TempPaths(via) as temps:
            f = temps.track(via / "x.tmp")
            f.write_text("1")
            raise Boom()
    assert temps.root == root.resolve() and not (root / "x.tmp").exists()


def test_path_swapped_for_an_escaping_symlink_is_not_followed(root: Path, outside: Path):
    with pytest.raises(Boom, match="original"):
        with TempPaths(root) as temps:
            d = temps.mkdtemp()
            shutil.rmtree(d)
            d.symlink_to(outside, target_is_directory=True)  # swapped behind our back
            raise Boom("original")
    assert (outside / "keep.txt").read_text() == "do not touch"
    assert len(temps.failures) == 1 and temps.failures[0].path == d


def test_removal_errors_are_collected_not_raised(root: Path):
    blocked = root / "blocked"
    blocked.mkdir()
    (blocked / "a.tmp").write_text("x")

    def attempt() -> list[str]:
        try:
            with TempPaths(root) as temps:
                temps.track(blocked / "a.tmp")
                raise Boom("the stage's own error")
        except Boom as exc:
            assert str(exc) == "the stage's own error"
        return [str(f.path) for f in temps.failures]

    if os.geteuid() == 0:
        base = Path(tempfile.mkdtemp(prefix="stave-cleanup-test-", dir="/tmp"))
        try:
            os.chmod(base, 0o755)  # nobody must reach it; tmp_path's parents are private
            shutil.move(str(root), base / "work")
            root = base / "work"
            blocked = root / "blocked"
            failures = fx.run_unprivileged(attempt)
        finally:
            shutil.rmtree(base)
    else:
        os.chmod(blocked, 0o500)
        try:
            failures = attempt()
        finally:
            os.chmod(blocked, 0o755)
    assert failures == [str(blocked / "a.tmp")]


def test_root_must_be_a_real_folder(tmp_path: Path):
    with pytest.raises(ValueError, match="existing folder"):
        TempPaths(tmp_path / "nope")
    with pytest.raises(ValueError):
        TempPaths("/")


# --- stale temps -----------------------------------------------------------------------


def _aged(path: Path, wall: float, age_s: float) -> Path:
    os.utime(path, (wall - age_s, wall - age_s), follow_symlinks=False)
    return path


def test_remove_stale_temps(tmp_path: Path, outside: Path, clock):
    folder = tmp_path / "out"
    (folder / "song").mkdir(parents=True)
    now = clock.wall()
    for p in [folder / ".summary.json.tmp83k2", folder / ".bars.parquet.tmp", folder / ".young.tmp1",
              folder / "summary.json", folder / "song" / ".beats.csv.tmpQ"]:
        p.write_text("x")
    ages = {".summary.json.tmp83k2": 7200, ".bars.parquet.tmp": 3601, ".young.tmp1": 60,
            "summary.json": 7200}
    for name, age in ages.items():
        _aged(folder / name, now, age)
    _aged(folder / "song" / ".beats.csv.tmpQ", now, 7200)
    (folder / ".link.tmp1").symlink_to(outside / "keep.txt")
    _aged(folder / ".link.tmp1", now, 7200)
    (folder / ".dir.tmp2").mkdir()
    _aged(folder / ".dir.tmp2", now, 7200)

    result = remove_stale_temps(folder, older_than_s=3600, clock=clock)
    assert sorted(p.name for p in result.removed) == [".bars.parquet.tmp", ".summary.json.tmp83k2"]
    assert result.failures == []
    for name in [".young.tmp1", "summary.json", "song/.beats.csv.tmpQ", ".dir.tmp2"]:
        assert (folder / name).exists(), name
    assert (folder / ".link.tmp1").is_symlink() and (outside / "keep.txt").read_text() == "do not touch"

    deep = remove_stale_temps(folder, older_than_s=3600, recursive=True, clock=clock)
    assert [p.name for p in deep.removed] == [".beats.csv.tmpQ"]
    clock.advance(3600)
    assert [p.name for p in remove_stale_temps(folder, older_than_s=3600, clock=clock).removed] == [".young.tmp1"]


def test_remove_stale_temps_validates(tmp_path: Path, clock):
    with pytest.raises(ValueError, match="older_than_s"):
        remove_stale_temps(tmp_path, older_than_s=-1, clock=clock)
    with pytest.raises(ValueError, match="pattern"):
        remove_stale_temps(tmp_path, "../*.tmp", clock=clock)
    with pytest.raises(ValueError, match="folder"):
        remove_stale_temps(tmp_path / "missing", clock=clock)
