"""Installing a plugin distribution the way a user would, into a folder tests put on
PYTHONPATH (so the test environment itself stays untouched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def install_into(src: Path, target: Path) -> None:
    # Build from a copy beside the target: pip builds in the source tree (build/), and the
    # clone must stay clean.
    import shutil

    copy = Path(target).parent / f"src-{Path(src).name}"
    shutil.copytree(src, copy, dirs_exist_ok=True)
    src = copy
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
