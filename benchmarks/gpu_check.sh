#!/usr/bin/env bash
# The GPU check of issue 17, for a bare GPU machine with no network. Run from anywhere:
#
#     bash benchmarks/gpu_check.sh
#
# Steps, each under its own `timeout`, all within a budget of 290 s (each step gets the
# smaller of its own cap and what is left, and a step with too little left is skipped with a
# line that says so):
#
# 1. install: the wheels in .whl/ (made here by scripts/fetch_wheels.sh: pydantic, fvcore and
#    their small dependencies, pytest) and this project, built from the working tree with the
#    setuptools in .whl/, all with `pip --no-index` into runs/gpu-check/site (put first on
#    PYTHONPATH). basicsr is not needed: nothing below imports it.
# 2. tests: tests/test_cuda.py (device choice, AMP output dtype, fvcore counts on CUDA equal to
#    CPU, the pinned upload of the LR image).
# 3. images: the 4K and 8K test images of benchmarks/speed.py, made from the two validation
#    photos.
# 4. speed tables, one per family, at 4K and 8K: -O whole, -O regions, the official per-patch
#    loop (fp32) and ClassSR patches / regions with the classifier and with the edge table, in
#    fp32; then -O and ClassSR regions in fp16 and bf16 (torch.autocast, the engine's amp=).
#    FSRCNN: fsrcnn-x4 and classsr-fsrcnn-x4-fast. SRResNet: srresnet-x4 and
#    classsr-srresnet-x4, skipped with a line while their weights are not in
#    classsr_core/weights/. Each table ends with the issue's GPU targets read off its rows.
#
# Needs on that machine: torch with CUDA, numpy, opencv, pillow, pluggy, safetensors, pyyaml,
# tqdm (there already); .whl/ and the photos data/mate/usr/share/backgrounds/mate/nature/
# Wood.jpg and YellowFlower.jpg (git-ignored: carry them; scripts/fetch_wheels.sh and
# scripts/fetch_photos.sh make them here). Writes gpu_check.log, speed-cuda-*.md and
# speed-cuda-*.json under "$OUT" if set, else runs/gpu-check/.
#
# Knobs (for dry runs on a machine without a GPU, and for trying models):
#   PYTHON=...                 the Python (default: .venv/bin/python if it has torch, else python3)
#   GPU_CHECK_DEVICE=cpu       run the steps on the CPU (CUDA tests then skip)
#   GPU_CHECK_SIZES="4K 8K"    output sizes (2K, 4K, 8K)
#   GPU_CHECK_MAX_SIDE=64      crop the LR images to this many pixels a side (tiny dry runs)
#   GPU_CHECK_STEPS="install tests images fsrcnn srresnet"   the steps to run
#   GPU_CHECK_FSRCNN="fsrcnn-x4 classsr-fsrcnn-x4-fast"      -O model, then ClassSR model
#   GPU_CHECK_SRRESNET="srresnet-x4 classsr-srresnet-x4"     (shipped names or .safetensors)
#   GPU_CHECK_BUDGET=290       seconds for all steps
set -uo pipefail
cd "$(dirname "$0")/.."
DEST="${OUT:-runs/gpu-check}"
WHERE="${OUT:+\$OUT}" # messages name no path outside the repository
WHERE="${WHERE:-$DEST}"
SITE=runs/gpu-check/site # never under $OUT: what is written there is sent back
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
NATURE=data/mate/usr/share/backgrounds/mate/nature
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
read -r -a SIZES <<<"${GPU_CHECK_SIZES:-4K 8K}"
read -r -a STEPS <<<"${GPU_CHECK_STEPS:-install tests images fsrcnn srresnet}"
read -r -a FSRCNN <<<"${GPU_CHECK_FSRCNN:-fsrcnn-x4 classsr-fsrcnn-x4-fast}"
read -r -a SRRESNET <<<"${GPU_CHECK_SRRESNET:-srresnet-x4 classsr-srresnet-x4}"
MAX_SIDE=()
[ -n "${GPU_CHECK_MAX_SIDE:-}" ] && MAX_SIDE=(--max-side "$GPU_CHECK_MAX_SIDE")
BUDGET="${GPU_CHECK_BUDGET:-290}" # seconds for all steps: the issue asks for under 5 minutes
START=$SECONDS

say() { echo "gpu_check: $*"; }

wanted() {
  local step
  for step in "${STEPS[@]}"; do [ "$step" = "$1" ] && return 0; done
  return 1
}

# `timed CAP NAME CMD...`: CMD under `timeout`, for CAP seconds or what is left of the budget.
timed() {
  local cap=$1 name=$2 left rc
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 10 ]; then
    say "$name skipped: the ${BUDGET} s budget is spent"
    return 124
  fi
  say "$name (at most $cap s)"
  timeout "$cap" "$@"
  rc=$?
  [ "$rc" -eq 124 ] && say "$name stopped after $cap s"
  return "$rc"
}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
  elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    echo .venv/bin/python
  else
    echo python3
  fi
}

install() {
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    say "no wheels in .whl/: run scripts/fetch_wheels.sh on a machine with network and" \
      "carry .whl/ here" >&2
    return 2
  fi
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    say "$PY has no pip: run with PYTHON=... set to a Python that has one" >&2
    return 2
  fi
  rm -rf "$SITE"
  local wheels=() w
  for w in .whl/*.whl; do # setuptools and wheel serve the build only
    case "${w##*/}" in setuptools-* | wheel-*) ;; *) wheels+=("$w") ;; esac
  done
  # One pip call (two would trip over each other's bin/ in the target): the wheels, and this
  # project built from the tree, so that its entry points register and the weights shipped by
  # now come along. pip's build environment takes setuptools and wheel from .whl/ too.
  timed 90 "install: the wheels in .whl/ and this project, offline" "$PY" -m pip install \
    --quiet --no-index --find-links .whl --no-deps --no-compile --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}" . || return 1
}

loads() {
  "$PY" - <<'EOF'
import importlib.util
import sys
from importlib.metadata import entry_points

names = ["torch", "numpy", "cv2", "PIL", "pluggy", "safetensors", "yaml", "tqdm", "pydantic",
         "fvcore", "iopath", "pytest", "classsr_core", "classsr_plugins"]
missing = [n for n in names if importlib.util.find_spec(n) is None]
if missing:
    sys.exit(f"gpu_check: missing here: {', '.join(missing)}")
if not list(entry_points(group="classsr")):
    sys.exit("gpu_check: the project's plugins did not register (no 'classsr' entry points)")
from classsr_core.model.loading import load_model

load_model("fsrcnn-x4", device="cpu")
import torch

print("gpu_check: torch", torch.__version__, "cuda", torch.version.cuda, "available",
      torch.cuda.is_available())
EOF
}

weights_of() { # the file behind a model: a shipped name's weights, or the file itself
  case "$1" in
    */* | *.safetensors) echo "$1" ;;
    *) echo "classsr_core/weights/$1.safetensors" ;;
  esac
}

speed() { # speed FAMILY O_MODEL CLASSSR_MODEL CAP
  local family=$1 o_model=$2 model=$3 cap=$4 name rc
  for name in "$o_model" "$model"; do
    if [ ! -f "$(weights_of "$name")" ]; then
      say "$family rows skipped: $name is not shipped yet (no $(weights_of "$name"))"
      return 0
    fi
  done
  # Written inside the repository, then copied: the tables' command lines name no outside path.
  local out="runs/gpu-check/speed-$DEVICE-$family"
  timed "$cap" "$family speed table ($o_model, $model)" "$PY" benchmarks/speed.py \
    --device "$DEVICE" --sizes "${SIZES[@]}" "${MAX_SIDE[@]}" --threads 8 --reps 3 \
    --in-process --o-model "$o_model" --model "$model" --o-kinds whole o-regions \
    --router classifier edge --kinds patches regions --dtype fp32 fp16 bf16 \
    --amp-kinds regions --out "$out.md" --json "$out.json"
  rc=$?
  # Cut short: speed.py writes its table after every row but prints it only at its end.
  [ "$rc" -eq 124 ] && [ -f "$out.md" ] && cat "$out.md"
  if [ "$DEST" != runs/gpu-check ]; then
    cp "$out".* "$DEST"/ 2>/dev/null || true
  fi
  return "$rc"
}

main() {
  PY="$(pick_python)"
  say "$(date -u '+%F %T') UTC; python $PY; device $DEVICE; sizes ${SIZES[*]};" \
    "steps ${STEPS[*]}; results in $WHERE"
  local status=0
  if wanted install; then
    install || {
      say "the offline install failed" >&2
      return 2
    }
    export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  loads || return 2
  if [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || {
      say "torch sees no CUDA device: nothing to check (GPU_CHECK_DEVICE=cpu for a dry run)" >&2
      return 2
    }
  fi
  if wanted tests; then
    timed 60 "CUDA tests (tests/test_cuda.py)" "$PY" -m pytest -q -rs -p no:cacheprovider \
      tests/test_cuda.py || status=1
  fi
  if wanted images; then
    for photo in Wood YellowFlower; do
      if [ ! -f "$NATURE/$photo.jpg" ]; then
        say "$NATURE/$photo.jpg is missing: run scripts/fetch_photos.sh on a machine with" \
          "network and carry $NATURE/Wood.jpg and $NATURE/YellowFlower.jpg" >&2
        return 2
      fi
    done
    timed 60 "test images (${SIZES[*]})" "$PY" benchmarks/speed.py --sizes "${SIZES[@]}" \
      --threads 8 --prepare-only || return 1
  fi
  if wanted fsrcnn; then
    speed fsrcnn "${FSRCNN[0]}" "${FSRCNN[1]}" 120 || status=1
  fi
  if wanted srresnet; then
    speed srresnet "${SRRESNET[0]}" "${SRRESNET[1]}" 150 || status=1
  fi
  say "done in $((SECONDS - START)) s, status $status"
  return "$status"
}

main 2>&1 | tee "$DEST/gpu_check.log"
exit "${PIPESTATUS[0]}"
