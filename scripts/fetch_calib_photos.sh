#!/usr/bin/env bash
# Calibration images for the routers, beside the training photos: content the natural
# training photos lack (text, line art, flat graphics, grey scans, fine texture), written
# as PNG into data/photos/calib/ (git-ignored). Never an image of the holdout set
# (scripts/fetch_val_photos.sh): the script refuses any name that is there.
#   skimage-*  scikit-image's bundled camera, text, page, brick, grass, gravel, coins, moon,
#              immunohistochemistry, retina, colorwheel, logo (inside the wheel: no download)
#   gnome-*    Debian gnome-backgrounds: adwaita-l, grid-l, licorice-l, symbolic-d, vnc-l
#              (the holdout uses truchet-d, pixels-l, wood-d)
# Images wider than 2000 px are halved (MATLAB bicubic, antialiased), then centre-cropped to
# at most 1024 x 1024. Re-running reuses what is there. Usage: scripts/fetch_calib_photos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"

. scripts/debs.sh
fetch_deb gnome-backgrounds

"$PY" - <<'PYEOF'
import sys
from pathlib import Path

import numpy as np
import skimage.data

from classsr_core._basicsr import imresize
from classsr_core.io.images import read_image, write_image

OUT = Path("data/photos/calib")
HOLDOUT = Path("data/photos/holdout")
GNOME = Path("data/x-gnome-backgrounds/usr/share/backgrounds/gnome")
SKIMAGE = ("camera", "text", "page", "brick", "grass", "gravel", "coins", "moon",
           "immunohistochemistry", "retina", "colorwheel", "logo")
GNOME_NAMES = ("adwaita-l", "grid-l", "licorice-l", "symbolic-d", "vnc-l")


def skimage_rgb(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:  # logo: over white
        a = img[:, :, 3:]
        img = img[:, :, :3] * a + (1 - a)
    return img


sources = [(f"skimage-{n}", lambda n=n: skimage_rgb(n)) for n in SKIMAGE]
sources += [(f"gnome-{n}", lambda n=n: read_image(GNOME / f"{n}.webp").rgb) for n in GNOME_NAMES]
held_out = {p.stem for p in HOLDOUT.glob("*.png")}
OUT.mkdir(parents=True, exist_ok=True)
for name, load in sources:
    if name in held_out:
        sys.exit(f"fetch_calib_photos: {name} is a holdout image")
    target = OUT / f"{name}.png"
    if target.is_file():
        print(f"{target} (kept)")
        continue
    img = load()
    if img.shape[1] > 2000:
        img = imresize(img, 0.5)
    h, w = img.shape[:2]
    ch, cw = min(h, 1024), min(w, 1024)
    img = img[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    write_image(target, np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    print(f"{target} {img.shape[1]}x{img.shape[0]}")
PYEOF
