#!/usr/bin/env bash
# Fetch, here, the wheels that benchmarks/gpu_check.sh installs with `pip --no-index` on a
# GPU machine that has no network: Python 3.12 (CPython, manylinux x86_64) with torch (CUDA),
# timm, pluggy, safetensors, pyyaml, tqdm, pillow, opencv and scikit-image already there.
# What it lacks, and what is fetched into .whl/ (git-ignored; carry it to that machine):
#
#   pydantic, pydantic-core, annotated-types, typing-inspection, typing-extensions (new
#     enough for pydantic: the one torch brought may be older)
#   fvcore and its small dependencies: iopath, yacs, tabulate, termcolor, portalocker
#   tifffile (a declared dependency: streamed outputs)
#   pytest, iniconfig, packaging, pygments (the CUDA tests)
#   setuptools, wheel: the build backend of pyproject.toml, so that gpu_check.sh builds and
#     installs this project from the working tree there, offline (its entry points register
#     and the weights in classsr_core/weights/ come along, whatever has shipped by then)
#
# basicsr is not fetched: the check does not need it (benchmarks/speed.py resizes with its
# own port of MATLAB's imresize). Versions are pinned to those the test suite runs with
# here; bump them together with the project's .venv.
#
#     scripts/fetch_wheels.sh            # then: ls .whl/
#
# PYTHON=... picks the Python whose pip downloads and builds (default .venv/bin/python, else
# python3); the wheels are chosen for CPython 3.12 whatever version that is. fvcore and iopath
# publish only source archives: they are built here with `pip wheel --no-deps` (pure Python,
# so the wheel installs on 3.12 too). Finally the project itself is built once into a scratch
# folder under .whl/ to check that its wheel carries the weights, the plugins package and the
# entry points; that wheel is not kept (gpu_check.sh builds a fresh one from the tree).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.whl
BINARY=(
  "pydantic==2.14.4"
  "pydantic-core==2.50.5"
  "annotated-types==0.8.0"
  "typing-inspection==0.4.5"
  "typing-extensions==4.16.0"
  "yacs==0.1.8"
  "tabulate==0.10.0"
  "termcolor==3.3.0"
  "portalocker==4.4.2"
  "tifffile==2026.3.3"
  "pytest==9.2.0"
  "iniconfig==2.3.1"
  "packaging==26.4"
  "pygments==2.21.0"
  "setuptools==84.2.1"
  "wheel==0.48.0"
)
SOURCE_ONLY=("fvcore==0.1.5.post20221221" "iopath==0.1.10")

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi
"$PY" -m pip --version >/dev/null 2>&1 || {
  echo "fetch_wheels: $PY has no pip; run 'make install' first or set PYTHON" >&2
  exit 2
}

mkdir -p "$DEST"
echo "fetch_wheels: binary wheels for CPython 3.12, manylinux x86_64 -> $DEST/"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  --implementation cp --python-version 3.12 --abi cp312 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 "${BINARY[@]}"

# A source archive builds to a pure-Python wheel; --no-build-isolation uses this Python's
# setuptools, so nothing else is fetched for the build.
scratch="$DEST/.build"
rm -rf "$scratch"
mkdir -p "$scratch/src"
echo "fetch_wheels: building wheels of the source-only packages: ${SOURCE_ONLY[*]}"
"$PY" -m pip download --quiet --no-deps --no-binary=:all: --dest "$scratch/src" "${SOURCE_ONLY[@]}"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$DEST" "$scratch"/src/*
for built in "$DEST"/fvcore-*.whl "$DEST"/iopath-*.whl; do
  case "$built" in
    *-py3-none-any.whl) ;;
    *) echo "fetch_wheels: $built is not pure Python: it will not install on 3.12" >&2 && exit 1 ;;
  esac
done

# The project's wheel must carry what an installed copy needs: check it, then drop it.
echo "fetch_wheels: checking this project's wheel (weights, plugins, entry points)"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$scratch/project" .
"$PY" - "$scratch"/project/classsr-*.whl <<'EOF'
import sys
import zipfile
from pathlib import Path

names = zipfile.ZipFile(sys.argv[1]).namelist()
weights = sorted(Path("classsr_core/weights").glob("*.safetensors"))
missing = [f"classsr_core/weights/{w.name}" for w in weights]
missing = [m for m in missing if m not in names]
if not any(n.startswith("classsr_plugins/") for n in names):
    missing.append("the classsr_plugins package")
entry = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
text = zipfile.ZipFile(sys.argv[1]).read(entry[0]).decode() if entry else ""
if "[classsr]" not in text:
    missing.append("the [classsr] entry points")
if missing:
    sys.exit("fetch_wheels: the project's wheel lacks " + ", ".join(missing))
print(f"fetch_wheels: the project's wheel carries {len(weights)} weight files, the plugins "
      "and the entry points")
EOF
rm -rf "$scratch"

echo "fetch_wheels: $DEST/ now holds:"
ls -l "$DEST"/*.whl | awk '{printf "  %8.0f KiB  %s\n", $5 / 1024, $9}'
du -sh "$DEST" | awk '{print "fetch_wheels: " $1 " in all"}'
