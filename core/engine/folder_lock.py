"""One Stave process at a time runs batches in an output folder.

Two writers on one folder (the window and `stave resume`, say) would each
think the other's running jobs were interrupted. ``FolderLock`` takes an
exclusive advisory lock on OUT/.stave/lock; the kernel drops it when the
process dies, so a crash never leaves the folder locked. Reading the store
(``stave status``) needs no lock.
"""

from __future__ import annotations

import os

from core.engine.store import StoreError

try:
    import fcntl
except ImportError:  # Windows: msvcrt's locking is mandatory and byte-ranged; use it on the first byte
    fcntl = None
    import msvcrt


class FolderLock:
    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, ".stave", "lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            holder = ""
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise StoreError(
                f"another Stave{who} is running a batch in {os.path.dirname(os.path.dirname(self.path))}",
                suggestion="Wait for it to finish or pause it there; `stave status DIR` shows its progress.",
            ) from None
        if fcntl is not None:  # on Windows the locked first byte cannot be rewritten
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
