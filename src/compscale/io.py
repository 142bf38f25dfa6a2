"""File writing that never leaves a half-written file behind."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compscale.errors import UserError

#: Temporary files are ``.cs-TAG-RANDOM.tmp`` (folders: ``.tmp.d``) beside their target, TAG naming the target:
#: short whatever the target's name (a name near 255 bytes still gets one), and found again after a crash.
TEMP_PREFIX = ".cs-"
TEMP_SUFFIX = ".tmp"
STAGE_SUFFIX = ".tmp.d"


def new_file_mode(target: Path) -> int:
    """The mode a plain ``open(target, "w")`` would give: the existing file's, else 0o666 minus the umask.
    (mkstemp creates 0o600, which would make every exported model or report private to its writer.)"""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux: read the umask without changing it (os.umask() to read it is racy with threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def target_tag(path: str | os.PathLike) -> str:
    """The short tag of ``path``'s file name in the names of its temporary files."""
    return hashlib.sha1(os.fsencode(Path(path).name)).hexdigest()[:8]


def check_output_file(path: str | os.PathLike) -> None:
    """Refuse an existing ``path`` that is not a regular file: writing would rename a file over a folder, a
    device (``/dev/null``), a FIFO or a socket. A symlink is judged by what it points to."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (or a parent that is a file: creating the folder says so)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"cannot write {path}: it is a folder; give a file name")
    kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
    raise UserError(f"cannot write {path}: it is {kind}, not a regular file; give another file name")


def make_folder(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders created, outermost first (for
    :func:`remove_empty_folders`). One line when a part of the path is a file or cannot be created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write in {folder}: it is not a folder")
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        remove_empty_folders(missing[::-1])
        raise UserError(f"cannot write in {folder}: {err.strerror or err}") from None
    if not folder.is_dir():
        raise UserError(f"cannot write in {folder}: it is not a folder")
    return missing[::-1]


def remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders :func:`make_folder` created, innermost first, as far as they are empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files and folders that writers killed mid-write (SIGKILL, SIGTERM, power loss)
    left in ``folder``; returns how many. A live writer holds a lock on its temporary, so only orphans go."""
    removed = 0
    try:
        entries = [e for e in os.scandir(folder)
                   if e.name.startswith(TEMP_PREFIX) and e.name.endswith((TEMP_SUFFIX, STAGE_SUFFIX))]
    except OSError:
        return 0
    for entry in entries:
        is_stage = entry.name.endswith(STAGE_SUFFIX)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if is_stage else 0)
        try:
            fd = os.open(entry.path, flags)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not (stat.S_ISDIR(st.st_mode) if is_stage else stat.S_ISREG(st.st_mode)) or not _try_lock(fd):
                continue
            if is_stage:
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


@contextmanager
def staging_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A private temporary folder beside ``target`` (same file system: a file moves out of it atomically),
    locked while in use, removed afterwards; one a killed writer left is removed by the next write there."""
    target = Path(target)
    created = make_folder(target.parent)
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target_tag(target)}-", suffix=STAGE_SUFFIX,
                                     dir=target.parent))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        remove_empty_folders(created)
        raise UserError(f"cannot write {target}: {err.strerror or err}") from None
    _try_lock(fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
        remove_empty_folders(created)  # a failed write leaves no folder behind (a finished one is not empty)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On any failure the temporary file is removed, so are the folders this created, and the previous ``path``
    (if any) is untouched. An existing ``path`` that is not a regular file (a folder, ``/dev/null``, a FIFO) is
    refused before anything is written. The temporary is ``.cs-TAG-RANDOM.tmp`` (short for any legal name),
    locked while written; the orphans of killed writers in the folder are removed first.
    """
    target = Path(path)
    check_output_file(target)
    created = make_folder(target.parent)
    mode = new_file_mode(target)
    try:
        remove_stale_temporaries(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target_tag(target)}-", suffix=TEMP_SUFFIX,
                                   dir=target.parent)
    except OSError as err:
        remove_empty_folders(created)
        raise UserError(f"cannot write {target}: {err.strerror or err}") from None
    _try_lock(fd)  # held until the rename: a live temporary is never taken for an orphan
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, mode)
        yield tmp_path
        # Writers that write a file of their own and rename it over ours (safetensors) drop the mode.
        os.chmod(tmp_path, mode)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        check_output_file(target)  # a FIFO or folder made there meanwhile is not replaced either
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        remove_empty_folders(created)
        raise UserError(f"cannot write {target}: {err.strerror or err}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        remove_empty_folders(created)
        raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
