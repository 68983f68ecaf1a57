#!/usr/bin/env bash
# Natural photographs for routing (docs/routing.md "The images"): the kind of image most
# users upscale. Graphics and line art route differently and must not stand in for them.
# Sources (no internet beyond the package registry):
#   Debian lomiri-wallpapers-16.04: 15 photographs, 1365-5312 px wide, split ONCE, by name:
#     holdout (never trained, calibrated or tuned on): Bridge, Dragonfly, Picture_1A,
#       aitzgorri, free, friends, life, seeding
#     calibration: Picture_0B, Wine, analogpattern, greentock, picosdeeuropa, sunset, umang
#   Debian mate-backgrounds: the 2 validation photos (Wood, YellowFlower; never trained on)
#     join the holdout at native resolution.
# Written as PNG (git-ignored):
#   data/photos/natural/holdout/NAME.png  1024x768 HR centre crop at native resolution
#   data/photos/natural/whole/NAME.png    the whole holdout photo, 2560 px wide (antialiased
#                                         MATLAB bicubic): LR 640 wide at x4, for wall clock
#   data/photos/natural/calib/NAME-*.png  calibration: two 1024x768 native crops (left and
#                                         right of centre) and the whole photo 1024 px wide
# Re-running reuses what is there. Usage: scripts/fetch_natural_photos.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"

scripts/fetch_photos.sh "$PY" >/dev/null   # unpacks mate-backgrounds into data/mate

. scripts/debs.sh
fetch_deb lomiri-wallpapers-16.04

"$PY" - <<'PYEOF'
import sys
from pathlib import Path

import numpy as np

from classsr_core._basicsr import imresize
from classsr_core.io.images import read_image, write_image

LOMIRI = Path("data/x-lomiri-wallpapers-16.04/usr/share/backgrounds")
MATE = Path("data/mate/usr/share/backgrounds/mate/nature")
HOLDOUT = ["Bridge", "Dragonfly", "Picture_1A", "aitzgorri", "free", "friends", "life", "seeding"]
CALIB = ["Picture_0B", "Wine", "analogpattern", "greentock", "picosdeeuropa", "sunset", "umang"]
MATE_HOLDOUT = ["Wood", "YellowFlower"]
OUT = Path("data/photos/natural")
CROP_W, CROP_H = 1024, 768


def lomiri(stem: str) -> Path:
    found = sorted(LOMIRI.glob(f"{stem}_by_*.jpg"))
    if len(found) != 1:
        sys.exit(f"fetch_natural_photos: expected one {stem}_by_*.jpg in {LOMIRI}, got {found}")
    return found[0]


def crop(img: np.ndarray, cx: float) -> np.ndarray:
    """A CROP_W x CROP_H crop centred vertically and at ``cx`` (0..1) of the width."""
    h, w = img.shape[:2]
    ch, cw = min(h, CROP_H), min(w, CROP_W)
    y = (h - ch) // 2
    x = int(round(np.clip(cx * w - cw / 2, 0, w - cw)))
    return img[y : y + ch, x : x + cw]


def resized(img: np.ndarray, width: int) -> np.ndarray:
    return np.clip(imresize(img, width / img.shape[1]), 0.0, 1.0)


def write(target: Path, make) -> None:
    if target.is_file():
        return
    img = make()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image(target, np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    print(f"{target} {img.shape[1]}x{img.shape[0]}")


assert not set(HOLDOUT) & set(CALIB)
holdout = [(n.lower(), lomiri(n)) for n in HOLDOUT] + [
    (f"mate-{n.lower()}", MATE / f"{n}.jpg") for n in MATE_HOLDOUT
]
for name, src in holdout:
    write(OUT / "holdout" / f"{name}.png", lambda: crop(read_image(src).rgb, 0.5))
    write(OUT / "whole" / f"{name}.png", lambda: resized(read_image(src).rgb, 2560))
for n in CALIB:
    src = lomiri(n)
    write(OUT / "calib" / f"{n.lower()}-left.png", lambda: crop(read_image(src).rgb, 0.3))
    write(OUT / "calib" / f"{n.lower()}-right.png", lambda: crop(read_image(src).rgb, 0.7))
    write(OUT / "calib" / f"{n.lower()}-whole.png", lambda: resized(read_image(src).rgb, 1024))
for part in ("holdout", "whole", "calib"):
    print(f"{len(list((OUT / part).glob('*.png')))} images in {OUT / part}")
PYEOF
