#!/usr/bin/env bash
# The main command: set up, build the default artifacts if missing, start the app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
exec .venv/bin/python -m app "$@"
