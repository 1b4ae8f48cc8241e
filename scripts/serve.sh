#!/usr/bin/env bash
# The torch-free serving install: create or reuse .venv-serve, install requirements-serve.txt
# (no torch, no training tools), and serve an existing artifacts folder:
#   bash scripts/serve.sh [--artifacts DIR] [--port 7860] [--expose ...]   (flags of python -m app)
# The artifacts are built with the full install (bash scripts/run.sh --build-only); a folder
# without them is refused. REPLENS_SERVE_VENV names another virtual environment folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${REPLENS_SERVE_VENV:-.venv-serve}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[serve] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

stamp="$VENV/.setup-stamp-$(sha256sum requirements-serve.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[serve] installing requirements-serve.txt (first run: a minute or two)"
  start=$(date +%s)
  "$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  set +o pipefail
  "$VPY" -m pip install -q -r requirements-serve.txt 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  rc=${PIPESTATUS[0]}
  set -o pipefail
  [ "$rc" = 0 ] || { echo "[serve] pip failed (exit $rc)" >&2; exit "$rc"; }
  touch "$stamp"
  echo "[serve] installed in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"
fi

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
exec "$VPY" -m app --serve-only "$@"
