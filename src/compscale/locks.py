"""One run per output folder: an advisory lock on a file in the folder, released when its holder ends.

``fcntl.flock`` locks belong to the open file, so the kernel releases them when the holder exits or is killed
(SIGKILL included): a crashed run never leaves a folder locked. The lock file holds the holder's PID and what
it does, so a second run is refused with one line that names it. Nested locks on the same file in one
process (a demo whose search locks a folder again) are granted.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compscale.errors import UserError, shorten
from compscale.io import make_folder, remove_empty_folders, target_tag

#: The lock file of a folder; a per-target lock (e.g. one exported file) is ``.cs-TAG.lock``.
LOCK_NAME = ".compscale.lock"

#: (st_dev, st_ino) of the lock files this process holds, with their nesting depth.
_HELD: dict[tuple[int, int], int] = {}


def _holder(fd: int) -> str:
    """``pid N, what`` from a held lock file (what its holder wrote), or a plain description."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, what = text.partition(" ")
    if not pid.isdigit():
        return "another compscale process"
    return f"compscale {shorten(what, 60) or 'run'} (pid {pid})"


def _open_lock(path: Path) -> int | None:
    """An fd of the lock file (created if missing), or None where no lock can be made (a read-only folder:
    nothing can be written there either, and the first write says so)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None
        raise UserError(f"cannot lock {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"cannot lock {path}: it is not a regular file; remove it")
    return fd


def _key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _acquire(path: Path, folder: Path) -> tuple[int | None, bool]:
    """(an fd holding the lock of ``path``, whether this process held it already); (None, False) where locks
    cannot be had (a read-only folder, a file system without flock). Another holder: one line naming it."""
    for _ in range(10):
        fd = _open_lock(path)
        if fd is None:
            return None, False
        if _key(fd) in _HELD:
            return fd, True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{folder} is in use by {holder}; wait for it to finish or give another --out") from None
        except OSError:  # a file system without flock (some NFS): run unlocked, as before
            os.close(fd)
            return None, False
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except OSError:
            same = False
        if same:
            return fd, False
        os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
    raise UserError(f"cannot lock {path}: it keeps being replaced")


@contextmanager
def output_lock(folder: str | os.PathLike, what: str, target: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) while the block runs; ``what`` (``"training"``,
    ``"search"``...) is what a refused second run is told the holder does. With ``target``, the lock is that
    one file's in ``folder`` instead (two exports of different files into one folder do not exclude each
    other). A second holder gets one line naming the first's PID; on release the lock file is removed, and
    so is ``folder`` when this created it and it stayed empty."""
    folder = Path(folder)
    path = folder / (LOCK_NAME if target is None else f".cs-{target_tag(target)}.lock")
    created = make_folder(folder)
    try:
        fd, nested = _acquire(path, folder)
        if fd is None:
            yield folder
            return
        key = _key(fd)
        if nested:
            _HELD[key] += 1
            try:
                yield folder
            finally:
                _HELD[key] -= 1
                os.close(fd)  # another description of the file: closing it keeps the outer lock
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            try:
                path.unlink()  # while still held: an opener waiting on this file sees it replaced and retries
            except OSError:
                pass
            os.close(fd)
    finally:
        remove_empty_folders(created)
