"""ClassSR for JPEG deblocking, end to end on a CPU in a few minutes.

1. Train the plain network ("-O": one DnCNN of width 64) on sub-images of three photos
   scikit-image ships, saved as JPEG at quality 10 (the ``deblock`` task).
2. Divide the sub-images into three classes by how well that network restores them, and
   train ClassSR: DnCNN branches of width 16 / 32 / 64 plus the Class-Module, in the three
   stages of ``classsr train``.
3. On a held-out photo, compare the JPEG input, -O and ClassSR: PSNR, the FLOPs ClassSR
   spent relative to -O, and the share of patches each branch got.

The recipe is examples/restoration_quick.py's (shared with the other task). The networks are
shallow (``--depth``, 6 convolutions instead of DnCNN's 17) and trained
for 150 iterations per stage, so the numbers show the mechanics, not the method's quality;
docs/tasks/deblock.md has the measured runs and their configs.

    python examples/deblock.py [--quality 10] [--steps 150] [--out runs/example-deblock]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared driver beside this file

from restoration_quick import main  # noqa: E402

if __name__ == "__main__":
    main("deblock", __doc__.splitlines()[0])
