#!/usr/bin/env bash
# The GPU speed check: benchmarks/speed.py on CUDA at 2K, 4K and 8K outputs with the fast
# model: fp32 with both routers (classifier, edge table) in both modes, argmax / price and
# budget 0.5; then fp16 (--half) for the edge-routed regions rows, the speed option. Run
# from the repository root when a GPU machine is lent:
#
#     bash benchmarks/gpu_check.sh
#
# Writes speed-cuda-{fp32,fp16}.{md,json} and gpu_check.log under "$OUT" if set, else
# runs/gpu-check/. Each step has its own `timeout`; the whole takes well under 5 minutes on
# an H200 (most of it making the 8K test images and reading PNGs; speed.py writes its table
# after every row, so a step cut short keeps what it measured).
#
# Needs, on that machine (nothing is downloaded):
# - the two full-size validation photos, data/mate/usr/share/backgrounds/mate/nature/
#   Wood.jpg and YellowFlower.jpg (git-ignored: carry them);
# - a Python with torch (CUDA), numpy, opencv, pluggy, pydantic, fvcore, basicsr,
#   safetensors and this project installed. PYTHON=... picks it; default .venv/bin/python
#   when it runs, else python3. If the project does not load there, the wheels in .whl/ (if
#   any) and the project itself are installed offline into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST="${OUT:-runs/gpu-check}"
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
NATURE=data/mate/usr/share/backgrounds/mate/nature
read -r -a SIZES <<<"${GPU_CHECK_SIZES:-2K 4K 8K}"  # e.g. GPU_CHECK_SIZES=2K for a dry run

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
  elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    echo .venv/bin/python
  else
    echo python3
  fi
}

project_loads() {
  "$PY" -c "
import fvcore, pydantic, torch
from classsr_core._basicsr import basicsr
basicsr()
from classsr_core.model.loading import load_model
load_model('fsrcnn-x4', device='cpu')
" >/dev/null 2>&1
}

install_offline() {
  echo "gpu_check: the project does not load with $PY; installing offline into /tmp/site"
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || return 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --no-cache-dir --upgrade --target /tmp/site . || return 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
}

main() {
  PY="$(pick_python)"
  echo "gpu_check: $(date -u '+%F %T') UTC, python $PY, results in $DEST"
  for photo in Wood YellowFlower; do
    if [ ! -f "$NATURE/$photo.jpg" ]; then
      echo "gpu_check: $NATURE/$photo.jpg is missing: run scripts/fetch_photos.sh here and" \
        "carry $NATURE/Wood.jpg and $NATURE/YellowFlower.jpg" >&2
      return 2
    fi
  done
  if ! project_loads; then
    install_offline && project_loads || {
      echo "gpu_check: the project still does not load with $PY; missing packages (carry" \
        "them as wheels in .whl/; see /work/.library/device/README.md):" >&2
      "$PY" -c "
import importlib.util as u
names = ['torch', 'numpy', 'cv2', 'pluggy', 'pydantic', 'fvcore', 'basicsr', 'safetensors']
print('missing:', ', '.join(n for n in names if u.find_spec(n) is None) or 'none')
" >&2
      return 2
    }
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

  local status=0
  timeout 100 "$PY" benchmarks/speed.py --sizes "${SIZES[@]}" --threads 8 --prepare-only \
    || { echo "gpu_check: making the test images failed or timed out" >&2; return 1; }
  local common=(--device cuda --sizes "${SIZES[@]}" --threads 8 --reps 3
    --model classsr-fsrcnn-x4-fast --budget 0.5)
  timeout 120 "$PY" benchmarks/speed.py "${common[@]}" --router classifier edge \
    --kinds patches regions --out "$DEST/speed-cuda-fp32.md" --json "$DEST/speed-cuda-fp32.json" \
    || { status=$?; echo "gpu_check: the fp32 run ended with status $status" >&2; }
  timeout 60 "$PY" benchmarks/speed.py "${common[@]}" --half --router edge --kinds regions \
    --out "$DEST/speed-cuda-fp16.md" --json "$DEST/speed-cuda-fp16.json" \
    || { status=$?; echo "gpu_check: the fp16 run ended with status $status" >&2; }
  return "$status"
}

main 2>&1 | tee "$DEST/gpu_check.log"
exit "${PIPESTATUS[0]}"
