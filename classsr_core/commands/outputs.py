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


def check_outputs(
    inputs: Iterable[str | Path],
    outputs: Sequence[tuple[str | Path, str]],
    input_dirs: Iterable[str | Path] = (),
) -> None:
    """Refuse outputs that would overwrite an input or each other.

    ``outputs``: ``(path, label)`` pairs; the label says in messages where the path comes
    from (``"-o"``, ``"the output of d1/a.png"``). ``input_dirs``: folders given as inputs;
    no image may be written into one, because the next run over that folder would take it
    for an input (and an output named like an input would replace it).
    """
    from classsr_core.io.images import IMAGE_SUFFIXES

    by_input = {_resolve(p): Path(p) for p in inputs}
    dirs = {_resolve(d) for d in input_dirs}
    labels: dict[Path, list[str]] = {}
    for path, label in outputs:
        resolved = _resolve(path)
        if resolved in by_input:
            raise UnsafeOutputError(
                f"{path} ({label}) is the input {by_input[resolved]}; refusing to overwrite "
                "an input: choose another output path"
            )
        if resolved.suffix.lower() in IMAGE_SUFFIXES and resolved.parent in dirs:
            raise UnsafeOutputError(
                f"{path} ({label}) would be written into the input folder {resolved.parent}, "
                "mixed with the inputs (and read as one next time); choose another folder"
            )
        labels.setdefault(resolved, []).append(label)
    for resolved, names in labels.items():
        if len(names) > 1:
            raise UnsafeOutputError(
                f"{' and '.join(names)} would all be written to {resolved}, each replacing the "
                "last. Inputs whose names differ only by folder or suffix share an output "
                "name: rename them, or run them separately with different -o folders"
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
    from classsr_core.io.checkpoint import shipped_models

    files = []
    for name in names:
        if name is None:
            continue
        if Path(name).is_file():
            files.append(Path(name))
        elif str(name) in shipped_models():
            files.append(shipped_models()[str(name)])
    return files
