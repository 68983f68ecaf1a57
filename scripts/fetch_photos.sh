#!/usr/bin/env bash
# Real training photos without internet (see docs on data): Debian's mate-backgrounds holds
# 12 natural photographs (1280-2560 px). This fetches the package (no root needed), unpacks
# it into data/mate, and writes half-size HR copies (MATLAB bicubic, antialiased: it removes
# most JPEG block artefacts) as PNG:
#   data/photos/train  the first 10 (alphabetical)
#   data/photos/val    the last 2
# Re-running reuses what is there. Usage: scripts/fetch_photos.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
NATURE=data/mate/usr/share/backgrounds/mate/nature

if ! ls "$NATURE"/*.jpg >/dev/null 2>&1; then
  mkdir -p data
  if ! ls data/mate-backgrounds_*.deb >/dev/null 2>&1; then
    (cd data && apt-get download mate-backgrounds) || {
      echo "fetch_photos: 'apt-get download mate-backgrounds' failed; run 'apt-get update'" \
           "or copy the .deb into data/ by hand" >&2
      exit 1
    }
  fi
  dpkg -x data/mate-backgrounds_*.deb data/mate
fi

"$PY" - "$NATURE" <<'PYEOF'
import sys
from pathlib import Path

from classsr_core._basicsr import imresize
from classsr_core.training.prepare import to_uint8
from classsr_core.io.images import read_image, write_image

photos = sorted(Path(sys.argv[1]).glob("*.jpg"))
if len(photos) < 3:
    sys.exit(f"fetch_photos: expected 12 photos in {sys.argv[1]}, found {len(photos)}")
splits = {"train": photos[:-2], "val": photos[-2:]}
for split, files in splits.items():
    out_dir = Path("data/photos") / split
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = out_dir / f"{path.stem}.png"
        if target.is_file():
            print(f"{target} (kept)")
            continue
        half = to_uint8(imresize(read_image(path).rgb, 0.5))
        write_image(target, half)
        print(f"{target} {half.shape[1]}x{half.shape[0]}")
PYEOF
