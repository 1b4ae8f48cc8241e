#!/usr/bin/env bash
# Create or reuse .venv in the repository and install what is missing.
# Usage: bash scripts/setup.sh [--test | --serve | --check]   (REPLENS_GPU=1: requirements-gpu.txt)
#   --test   the full set and the test tools
#   --serve  only the serving set (requirements-serve.txt) and the project: enough to start the
#            page; scripts/run.sh installs the full set behind it
#   --check  install nothing; exit 0 when the full set is installed, 1 when it is not
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mode=${1:-}
want_test=0; [ "$mode" = "--test" ] && want_test=1

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment in .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
UV_VERSION=0.9.30  # the installer of the serving set (--serve)

# pip, minus this machine's noise about absent local index folders
pipq() {
  set +o pipefail
  "$VPY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  local rc=${PIPESTATUS[0]}
  set -o pipefail
  return "$rc"
}

req=requirements.txt
if [ "${REPLENS_GPU:-0}" = "1" ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  req=requirements-gpu.txt
fi
files="$req requirements-nodeps.txt"; [ $want_test = 1 ] && files="$files requirements-test.txt requirements-ray.txt"
stamp=".venv/.setup-stamp-$(cat $files | sha256sum | cut -c1-16)"
if [ "$mode" = "--check" ]; then
  [ -f "$stamp" ] && exit 0 || exit 1
fi
serve_stamp=".venv/.serve-stamp-$(sha256sum requirements-serve.txt | cut -c1-16)"
if [ "$mode" = "--serve" ]; then
  if [ ! -f "$stamp" ] && [ ! -f "$serve_stamp" ]; then
    echo "[setup] installing requirements-serve.txt (the page's packages)"
    start=$(date +%s)
    # uv installs the serving set several times faster than pip (parallel downloads and
    # unpacking); pip does it when uv cannot be installed
    if pipq install -q "uv==$UV_VERSION" && .venv/bin/uv pip install -q --python "$VPY" \
         -r requirements-serve.txt; then :; else pipq install -q -r requirements-serve.txt; fi
    touch "$serve_stamp"
    echo "[setup] serving set installed in $(( $(date +%s) - start )) s"
  fi
elif [ ! -f "$stamp" ]; then
  echo "[setup] installing $files (first run takes a few minutes)"
  start=$(date +%s)
  "$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  pipq install -q -r "$req"
  pipq install -q --no-deps -r requirements-nodeps.txt
  if [ $want_test = 1 ]; then pipq install -q -r requirements-test.txt -r requirements-ray.txt; fi
  touch "$stamp"
  echo "[setup] installed in $(( $(date +%s) - start )) s; venv size $(du -sh .venv | cut -f1)"
fi

# The project itself, editable and without dependencies (they are pinned above): `python -m
# app` and the `replens` command then work from any folder. Redone when pyproject.toml changes.
project_stamp=".venv/.project-stamp-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$project_stamp" ]; then
  # pip's isolated build first (setuptools from the registry); the venv's own setuptools when
  # the registry is out of reach
  if out=$(pipq install -q --no-deps -e . 2>&1) \
     || out=$(pipq install -q --no-deps --no-build-isolation -e . 2>&1); then   # quiet: notices
    rm -f .venv/.project-stamp-*; touch "$project_stamp"
  else
    echo "$out" | tail -5
    echo "[setup] WARNING: could not install the project itself (pip install -e . --no-deps);" \
         "run the commands from the repository folder"
  fi
fi

# Fashion-MNIST from Debian, when absent and apt is usable (training data: not for --serve).
if [ "$mode" != "--serve" ] && [ -z "${FASHION_MNIST_DIR:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
    echo "[setup] installing Debian package dataset-fashion-mnist"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
      || echo "[setup] WARNING: could not install dataset-fashion-mnist; set FASHION_MNIST_DIR to a folder with the IDX files"
  else
    echo "[setup] WARNING: Fashion-MNIST not found and apt-get is unavailable; set FASHION_MNIST_DIR"
  fi
fi
