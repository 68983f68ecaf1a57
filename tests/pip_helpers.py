"""Installing a plugin distribution the way a user would, into a folder tests put on
PYTHONPATH (so the test environment itself stays untouched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def install_into(src: Path, target: Path) -> None:
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
