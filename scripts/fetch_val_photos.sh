#!/usr/bin/env bash
# A held-out validation set for routing: images never trained or calibrated on, written as
# PNG into data/photos/holdout/ (git-ignored). Sources (no internet beyond the package
# registry and the wheels already installed):
#   lomiri-*   Debian lomiri-wallpapers-20.04: 4 photos / renders, 3840 px wide
#   ukui-*     Debian ukui-wallpapers: 12 graphics and photos, 3640-3840 px wide
#   gnome-*    Debian gnome-backgrounds: 3 WebP graphics (line art, pixel art, dark texture)
#   skimage-*  scikit-image's bundled astronaut, coffee, chelsea, rocket, hubble_deep_field
#              (inside the wheel: no download)
#   mate-*     the 2 validation photos of scripts/fetch_photos.sh (data/photos/val; this
#              script runs it first). Never the training photos (data/photos/train).
# Images wider than 2000 px are halved (MATLAB bicubic, antialiased, as fetch_photos.sh),
# then centre-cropped to at most 2048 x 2048 so that the benchmarks stay quick on 2 cores.
# Re-running reuses what is there. Usage: scripts/fetch_val_photos.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"

scripts/fetch_photos.sh "$PY" >/dev/null   # data/photos/val (the 2 mate validation photos)

. scripts/debs.sh
fetch_deb lomiri-wallpapers-20.04
fetch_deb ukui-wallpapers
fetch_deb gnome-backgrounds

"$PY" - <<'PYEOF'
import sys
from pathlib import Path

import numpy as np

# Internal modules of classsr (repoint here after the package reorganisation).
from classsr_core._basicsr import imresize
from classsr_core.training.prepare import to_uint8
from classsr_core.io.images import read_image, write_image

MAX_WIDTH = 2000  # wider: halve
MAX_SIDE = 2048  # after halving: centre-crop to this
OUT = Path("data/photos/holdout")
TRAIN = Path("data/photos/train")


def deb_files(root: str, names: list[str], expect: int) -> list[tuple[str, Path]]:
    files = [Path(root) / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"fetch_val_photos: missing {missing}")
    assert len(files) == expect
    return files


LOMIRI = "data/x-lomiri-wallpapers-20.04/usr/share/backgrounds"
UKUI = "data/x-ukui-wallpapers/usr/share/backgrounds"
GNOME = "data/x-gnome-backgrounds/usr/share/backgrounds/gnome"
sources: list[tuple[str, object]] = []  # (name, Path or skimage loader name)
for f in sorted(Path(LOMIRI).glob("*.jpg")):
    sources.append((f"lomiri-{f.stem.split('_by_')[0].lower()}", f))
for f in sorted(list(Path(UKUI).glob("*.jpg")) + list(Path(UKUI).glob("*.png"))):
    sources.append((f"ukui-{f.stem.lower()}", f))
for stem in ("truchet-d", "pixels-l", "wood-d"):  # line art, pixel art, dark texture
    sources.append((f"gnome-{stem}", Path(GNOME) / f"{stem}.webp"))
for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"):
    sources.append((f"skimage-{name.replace('_', '-')}", f"skimage:{name}"))
for f in sorted(Path("data/photos/val").glob("*.png")):
    sources.append((f"mate-{f.stem.lower()}", f))

n_lomiri = sum(n.startswith("lomiri-") for n, _ in sources)
n_ukui = sum(n.startswith("ukui-") for n, _ in sources)
if n_lomiri != 4 or n_ukui != 12:
    sys.exit(f"fetch_val_photos: expected 4 lomiri and 12 ukui images, got {n_lomiri}, {n_ukui}")

train_names = {f.stem.lower() for f in TRAIN.glob("*.png")}


def load(src) -> np.ndarray:
    """HWC float32 RGB in [0, 1]."""
    if isinstance(src, str) and src.startswith("skimage:"):
        import skimage.data

        img = getattr(skimage.data, src.split(":", 1)[1])()  # bundled in the wheel
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return img[:, :, :3].astype(np.float32) / 255.0
    return read_image(src).rgb


OUT.mkdir(parents=True, exist_ok=True)
rows = []
for name, src in sources:
    if name.split("-", 1)[1] in train_names:
        sys.exit(f"fetch_val_photos: {name} is a training photo")
    target = OUT / f"{name}.png"
    if target.is_file():
        img = read_image(target).rgb
        rows.append((name, img.shape[1], img.shape[0], "kept"))
        continue
    img = load(src)
    h0, w0 = img.shape[:2]
    note = f"from {w0}x{h0}"
    if w0 > MAX_WIDTH:
        img = np.clip(imresize(img, 0.5), 0.0, 1.0)
        note += ", halved"
    h, w = img.shape[:2]
    if h > MAX_SIDE or w > MAX_SIDE:
        ch, cw = min(h, MAX_SIDE), min(w, MAX_SIDE)
        y, x = (h - ch) // 2, (w - cw) // 2
        img = img[y : y + ch, x : x + cw]
        note += ", centre crop"
    write_image(target, to_uint8(img))
    rows.append((name, img.shape[1], img.shape[0], note))

print(f"{'name':32s} {'width':>6s} {'height':>6s}  note")
for name, w, h, note in rows:
    print(f"{name:32s} {w:6d} {h:6d}  {note}")
print(f"{len(rows)} images in {OUT}")
PYEOF
