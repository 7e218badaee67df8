#!/usr/bin/env bash
# Everything the test suite needs, from a fresh machine: a virtual environment, the package with
# its test extras (constrained to binder/requirements.txt, so tests and Binder run the same
# versions), Debian's Chromium for the browser test (when run as root on Debian/Ubuntu),
# then ruff and pytest over the tests and, through nbval, every notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c binder/requirements.txt \
  -e ".[test,browser]"
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest --nbval --nbval-current-env \
  --nbval-sanitize-with notebooks/sanitize.cfg tests notebooks "$@"
