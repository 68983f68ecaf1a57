"""Output-path safety shared by the commands that write files (docs/safety.md, "What a
command may overwrite").

Every check here runs before any work (before a model is loaded), compares resolved paths
(so ``./a.png``, ``a.png`` and a symlink to it are one file) and raises
:class:`UnsafeOutputError`, which the command line reports as one line with exit status 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from classsr_core.errors import ClassSRError


class UnsafeOutputError(ClassSRError):
    """An output would replace an input, another output, or (by default) an existing file."""


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_outputs(
    inputs: Iterable[str | Path],
    outputs: Sequence[tuple[str | Path, str]],
    input_dirs: Iterable[str | Path] = (),
) -> None:
    """Refuse outputs that would overwrite an input or each other.

    ``inputs``: every file the command reads (images, the model file, a config): no output
    may be one of them, whatever ``--overwrite`` says; a hard link to an input is the input.
    ``outputs``: ``(path, label)`` pairs, every file the command writes (images, class
    maps, the report, a CSV, a model); the label says in messages where the path comes
    from (``"-o"``, ``"the output of d1/a.png"``, ``"the report (--report)"``).
    ``input_dirs``: folders given as inputs; no image may be written into one, because the
    next run over that folder would take it for an input (and an output named like an
    input would replace it). An output that is an existing folder is refused too.
    """
    from classsr_core.io.images import IMAGE_SUFFIXES

    by_input = {_resolve(p): Path(p) for p in inputs}
    by_id = {i: p for r, p in by_input.items() if (i := _file_id(r)) is not None}
    dirs = {_resolve(d) for d in input_dirs}
    labels: dict[Path, list[str]] = {}
    for path, label in outputs:
        resolved = _resolve(path)
        same = by_input.get(resolved)
        if same is None and resolved.exists():
            same = by_id.get(_file_id(resolved))
        if same is not None:
            raise UnsafeOutputError(
                f"{path} ({label}) is the input {same}; refusing to overwrite an input (even "
                "with --overwrite): choose another output path"
            )
        if resolved.is_dir():
            raise UnsafeOutputError(f"{path} ({label}) is a folder; give the path of a file")
        if resolved.suffix.lower() in IMAGE_SUFFIXES and resolved.parent in dirs:
            raise UnsafeOutputError(
                f"{path} ({label}) would be written into the input folder {resolved.parent}, "
                "mixed with the inputs (and read as one next time); choose another folder"
            )
        labels.setdefault(resolved, []).append(label)
    for resolved, names in labels.items():
        if len(names) > 1:
            per_input = all(n.startswith(("the output of ", "the class map of ")) for n in names)
            hint = (
                "Inputs whose names differ only by folder or suffix share an output name: "
                "rename them, or run them separately with different -o folders"
                if per_input
                else "give each its own path"
            )
            raise UnsafeOutputError(
                f"{' and '.join(names)} would all be written to {resolved}, each replacing the "
                f"last. {hint}"
            )


def existing(paths: Iterable[str | Path]) -> list[Path]:
    """The paths among ``paths`` that already exist, in order."""
    return [Path(p) for p in paths if Path(p).exists()]


def refuse_existing(paths: Sequence[Path]) -> None:
    """Raise when ``paths`` (outputs that already exist) is not empty, naming a few of them
    and the two flags of ``classsr upscale`` / ``run`` that say what to do with them."""
    if not paths:
        return
    shown = ", ".join(str(p) for p in paths[:5])
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    raise UnsafeOutputError(
        f"{len(paths)} output file(s) already exist: {shown}{more}; nothing was written. "
        "Pass --overwrite to replace them, or --skip-existing to process only the inputs "
        "whose outputs are missing"
    )


def model_files(*names: str | None) -> list[Path]:
    """The files behind ``--model``-style arguments (a path, or a shipped model's name), so
    that a command may list them among its inputs."""
    import warnings

    from classsr_core.errors import CheckpointError
    from classsr_core.io.checkpoint import find_model

    files = []
    for name in names:
        if name is None:
            continue
        try:
            with warnings.catch_warnings():  # said once, where the model is loaded
                warnings.simplefilter("ignore")
                files.append(find_model(name))  # the file load_model would read
        except CheckpointError:  # neither a file nor a shipped model: the load says so
            pass
    return files
