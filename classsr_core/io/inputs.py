"""The input images of a command: folders expanded, only regular files taken.

A folder is listed without opening anything in it: an entry with an image suffix is an
input when it is a regular file once symlinks are followed. Anything else there (a FIFO,
whose opening would block the command before any work; a socket, a device, a folder named
``x.png``; a symlink loop or a broken symlink) is left out with one line that names it.
A path named on the command line that exists but is no regular file is refused up front
(exit 2); a named path that does not exist (or a broken symlink) stays a per-file error.
A folder's subfolders are searched only when asked (``recursive``, ``--recursive``); else
one line names the subfolders left out.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from classsr_core.errors import InputError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _why_not(path: Path) -> str | None:
    """``None`` when ``path`` is a regular file (symlinks followed), else why it is not;
    opens nothing."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return "a broken symlink"
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    return _kind(st.st_mode)


def _folder(
    item: Path, recursive: bool, exclude: set[Path], notes: list[str], hint: str | None
) -> list[Path]:
    """The image files of folder ``item``, sorted (with ``recursive``: its subfolders' too,
    depth first in name order; symlinked subfolders are not followed, and ``exclude``d ones,
    an output folder inside the input, are not searched)."""
    from classsr_core.io.images import IMAGE_SUFFIXES

    found: list[Path] = []
    subfolders: list[Path] = []
    for entry in sorted(item.iterdir()):
        if entry.is_dir() and entry.suffix.lower() not in IMAGE_SUFFIXES:
            subfolders.append(entry)
            continue
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        why = _why_not(entry)
        if why is None:
            found.append(entry)
        else:
            notes.append(f"{entry}: skipped, {why}, not an image file")
    if not recursive:
        if subfolders:
            names = ", ".join(p.name for p in subfolders[:5])
            more = f" and {len(subfolders) - 5} more" if len(subfolders) > 5 else ""
            notes.append(
                f"{item}: skipped {len(subfolders)} subfolder(s), not searched: {names}{more}"
                + (f" ({hint})" if hint else "")
            )
        return found
    for sub in subfolders:
        if _key(sub) in exclude:
            continue
        if sub.is_symlink():
            notes.append(f"{sub}: skipped, a symlink to a folder (not followed)")
            continue
        found.extend(_folder(sub, True, exclude, notes, hint))
    return found


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def list_inputs(
    inputs: Iterable[str | Path],
    *,
    recursive: bool = False,
    exclude: Iterable[str | Path] = (),
    hint: str | None = None,
) -> tuple[list[Path], list[str]]:
    """``(files, notes)``: the image files of ``inputs`` (folders expanded, sorted; files
    kept as given; a file named twice listed once), and one line per entry of a folder
    left out because it is no regular file, and per folder whose subfolders were not
    searched (``hint``, e.g. "give --recursive to include them", ends that line).

    ``recursive``: search the folders' subfolders too (not ``exclude``: the output folder
    when it lies inside an input folder; not symlinked folders, named in a note).

    Raises :class:`InputError` for a path named directly that exists but is no regular
    file or folder (a FIFO, a device, a symlink loop)."""
    files: list[Path] = []
    notes: list[str] = []
    seen: set[Path] = set()
    skip = {_key(Path(p)) for p in exclude}
    for item in map(Path, inputs):
        if item.is_dir():
            found = _folder(item, recursive, skip, notes, hint)
        else:
            if os.path.lexists(item):
                why = _why_not(item)
                # Missing behind a broken symlink, or unreadable: a per-file error later.
                if why is not None and why != "a broken symlink" and "unreadable" not in why:
                    raise InputError(
                        f"{item} is {why}, not an image file; give regular files or folders"
                    )
            found = [item]
        for path in found:
            key = _key(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, notes
