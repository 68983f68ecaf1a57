"""Atomic writes: a temporary file beside the target, renamed onto it on success, so an
interrupted write never leaves a half-written file under the real name.

The temporary name is fixed per target (:func:`temp_path`): ``.NAME.tmp`` beside
``NAME``, or ``.<hash>.tmp`` when that would not fit in a file name (255 bytes). A run
that was killed leaves its temporary file under that name, and the next write of the same
target (a resumed job) finds it and replaces it; :func:`remove_stale_temps` clears those
of a list of targets at the start of a job, including the random-suffixed names that
earlier versions used (``.NAME.XXXXXXXX.tmp``). While a write is under way its temporary
file is locked (``flock``), so a second writer of the same target is refused instead of
mixing its bytes into the first one's file, and a stale file is told from a live one.

A write that fails because the disk (or the quota) is full raises :class:`DiskFullError`,
an ``OSError`` whose message is ``disk full while writing PATH``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from contextlib import contextmanager, suppress
from pathlib import Path

try:  # POSIX; elsewhere writes are still atomic, only the live-writer check is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

NAME_MAX = 255  # bytes in one file name on every common filesystem
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# What earlier versions appended to ``.NAME.`` (tempfile.mkstemp's random part).
_LEGACY = re.compile(r"\.[A-Za-z0-9_]{1,32}\.tmp\Z")


class DiskFullError(OSError):
    """No space left (or the quota reached) while writing a file; names the file."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class BusyError(FileExistsError):
    """Another process is writing the same file right now."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def temp_path(path: str | Path) -> Path:
    """The temporary file that :func:`atomic_path` writes before renaming it onto ``path``:
    hidden, ending in ``.tmp`` (no folder listing takes it for an image), the same for the
    same target (a rerun finds what a killed run left), short enough for any name."""
    path = Path(path)
    name = f".{path.name}.tmp"
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:24]
        name = f".{digest}.tmp"
    return path.parent / name


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A stale temporary file of ``path`` (a killed run's) is replaced; one that another
    process is writing now raises :class:`BusyError`. A full disk raises
    :class:`DiskFullError`. On any error the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        fd = _create(tmp, path)
    except OSError as exc:
        if disk_full(exc):
            raise DiskFullError(exc.errno, f"disk full while writing {path}") from exc
        raise
    try:
        yield tmp
        # A writer that replaced our file with its own (safetensors does) may have made it
        # private (0600): give the output the mode a plain open() would, as users expect.
        with suppress(OSError):
            os.chmod(tmp, _PLAIN_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            if _same_file(fd, tmp):
                tmp.unlink()
            else:  # the writer put a new file there: ours unless another writer's
                _remove_if_stale(tmp)
        if disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(exc.errno, f"disk full while writing {path}") from exc
        raise
    finally:
        os.close(fd)  # releases the lock


def _plain_mode() -> int:
    """0o666 less the process's umask: what ``open(path, "w")`` creates."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_PLAIN_MODE = _plain_mode()


def _create(tmp: Path, path: Path) -> int:
    """Create ``tmp`` (mode as a plain ``open()`` gives it) and lock it; a stale one is
    removed first, a locked one is another writer's."""
    for _ in range(3):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if not _remove_if_stale(tmp):
                raise BusyError(
                    errno.EEXIST,
                    f"{path} is being written by another process (its temporary file {tmp.name} "
                    "is locked); wait for it, or write elsewhere",
                ) from None
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # taken for stale and locked by another writer in between
                os.close(fd)
                continue
            except OSError:  # a filesystem without locks: atomic all the same
                pass
        return fd
    raise BusyError(errno.EEXIST, f"{path} is being written by another process; write elsewhere")


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _remove_if_stale(tmp: Path) -> bool:
    """Remove ``tmp`` unless a live writer holds its lock; ``True`` when it is gone."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        try:  # read-write: NFS emulates flock with locks that need it
            fd = os.open(tmp, os.O_RDWR | nofollow)
        except PermissionError:
            fd = os.open(tmp, os.O_RDONLY | nofollow)
    except FileNotFoundError:
        return True
    except OSError:  # a symlink or something else that is not our file: leave it
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live writer
            except OSError:  # no locks on this filesystem: a file left here is stale
                pass
        if _same_file(fd, tmp):
            tmp.unlink()
        return True
    except FileNotFoundError:
        return True
    finally:
        os.close(fd)


def remove_stale_temps(paths) -> list[Path]:
    """Remove the temporary files that killed writes of ``paths`` left (this version's
    name and earlier versions' ``.NAME.XXXXXXXX.tmp``), unless a live writer holds one.
    One listing per folder. Returns the files removed."""
    by_dir: dict[Path, set[str]] = {}
    for p in map(Path, paths):
        by_dir.setdefault(p.parent, set()).add(p.name)
    removed = []
    for folder, names in by_dir.items():
        wanted = {temp_path(folder / n).name for n in names}
        try:
            entries = [e.name for e in os.scandir(folder)]
        except OSError:
            continue
        for entry in entries:
            legacy = _LEGACY.search(entry) if entry.startswith(".") else None
            stale = entry in wanted or (legacy is not None and entry[1 : legacy.start()] in names)
            if stale and _remove_if_stale(folder / entry):
                removed.append(folder / entry)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
