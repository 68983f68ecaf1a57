#!/usr/bin/env bash
# Re-measure the edge tables of the shipped ClassSR models and make the edge router and the
# regions mode their defaults (weights untouched). Calibration images only: the training photos,
# data/photos/calib and data/photos/natural/calib; never data/photos/holdout or
# data/photos/natural/holdout (the routing benchmarks' images).
#   scripts/fetch_photos.sh && scripts/fetch_calib_photos.sh && scripts/fetch_natural_photos.sh &&
#   scripts/recalibrate_shipped.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
tmp="$(mktemp -d)"
MODELS="${MODELS:-classsr-fsrcnn-x4-fast classsr-fsrcnn-x4-shared classsr-fsrcnn-x4 classsr-srresnet-x4}"
for name in $MODELS; do  # MODELS="a b" recalibrates only those
  "$PY" -m classsr_core.cli calibrate data/photos/train data/photos/calib data/photos/natural/calib \
      --model "$name" -o "$tmp/$name.safetensors" --make-default
  "$PY" - "$tmp/$name.safetensors" "classsr_core/weights/$name.safetensors" <<'PYEOF'
import sys

import torch

from classsr_core.io.checkpoint import read_checkpoint, save_state

new, old = sys.argv[1], sys.argv[2]
state, meta = read_checkpoint(new)
before, _ = read_checkpoint(old)
assert state.keys() == before.keys(), "calibration must not change the weights"
for k, v in state.items():
    assert torch.equal(v, before[k].to(v.dtype)), k
state = {k: v.to(before[k].dtype) for k, v in state.items()}  # keep the file's dtypes
meta.pop("edge_router", None)
save_state(state, old, meta)
mode = meta.get("defaults", {}).get("mode")
print(f"{old}: edge table {meta['routers']['edge']['statistic']}, default router edge, mode {mode}")
PYEOF
done
rm -rf "$tmp"
