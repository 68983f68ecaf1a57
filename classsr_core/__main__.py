"""``python -m classsr_core``: the ``classsr`` command line (what ``torchrun -m`` runs)."""

import sys

from classsr_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
