#!/usr/bin/env bash
# Open the notebooks from a fresh machine: a virtual environment, kvlab with JupyterLab (the
# versions binder/requirements.txt pins), then
# JupyterLab on chapter 1. Extra arguments go to `jupyter lab` (e.g. --port 8899 --no-browser).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c binder/requirements.txt \
  -e ".[lab]"
extra=()
if [ "$(id -u)" = 0 ]; then extra+=(--allow-root); fi  # containers often run as root
exec "$VENV/bin/jupyter" lab "${extra[@]}" "$@" notebooks/01_tour.ipynb
