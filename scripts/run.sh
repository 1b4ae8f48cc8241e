#!/usr/bin/env bash
# The main command: start the app at once and build the missing default models behind it.
# On a machine without the environment the page's packages (requirements-serve.txt) are
# installed first and the page comes up; the training stack (torch, ...) installs behind it
# (log: .venv/install.log), and the build starts when it is done. With --build-only the
# full set is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --build-only "*) bash scripts/setup.sh ;;  # builds at once: the full set first
  *) bash scripts/setup.sh --serve ;;
esac
if ! bash scripts/setup.sh --check; then
  echo "[run] installing the training stack behind the page (log: .venv/install.log)"
  bash scripts/setup.sh > .venv/install.log 2>&1 &
  export REPLENS_INSTALL_PID=$!
fi
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
exec .venv/bin/python -m app "$@"
