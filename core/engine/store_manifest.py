"""Artifact manifests: what a stage wrote, with sizes and hashes, and checking them again.

A stage is done only when its artifacts were written atomically and recorded
with their sha256; on resume a stage is skipped only when
:func:`verify_manifest` still holds for what it recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Artifact:
    """One file a stage wrote: path relative to the output folder (POSIX form)."""

    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict) -> "Artifact":
        return cls(path=str(d["path"]), sha256=str(d["sha256"]), size=int(d["size"]))


_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _relative(out_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    out = Path(os.path.abspath(out_dir))
    p = Path(os.path.abspath(Path(out, path)))
    try:
        rel = p.relative_to(out)
    except ValueError:
        raise ValueError(f"artifact {p} is not inside the output folder {out}") from None
    return rel.as_posix()


def artifact_for(out_dir: str | os.PathLike, path: str | os.PathLike) -> Artifact:
    """Hash a written file into an :class:`Artifact` (``path`` absolute or relative to ``out_dir``)."""
    rel = _relative(out_dir, path)
    full = Path(out_dir, rel)
    return Artifact(path=rel, sha256=sha256_file(full), size=full.stat().st_size)


def manifest_problems(out_dir: str | os.PathLike, manifest) -> list[str]:
    """Why ``manifest`` does not verify: missing, resized or changed artifacts (empty when fine)."""
    problems = []
    for art in manifest:
        rel = PurePosixPath(art.path)
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(f"{art.path}: not a path inside the output folder")
            continue
        full = Path(out_dir, *rel.parts)
        try:
            st = full.stat()
        except OSError:
            problems.append(f"{art.path}: missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{art.path}: not a regular file")
        elif st.st_size != art.size:
            problems.append(f"{art.path}: {st.st_size} bytes, expected {art.size}")
        else:
            try:
                digest = sha256_file(full)
            except OSError as exc:
                problems.append(f"{art.path}: unreadable ({exc.strerror or exc})")
                continue
            if digest != art.sha256:
                problems.append(f"{art.path}: content changed (sha256 differs)")
    return problems


def verify_manifest(out_dir: str | os.PathLike, manifest) -> bool:
    """True when every artifact exists with the recorded size and sha256."""
    return not manifest_problems(out_dir, manifest)


def manifest_to_json(manifest) -> str:
    return json.dumps([a.to_dict() for a in manifest])


def manifest_from_json(text: str) -> tuple[Artifact, ...]:
    return tuple(Artifact.from_dict(d) for d in json.loads(text))
