#!/usr/bin/env bash
# Set up everything the tests need (Python packages, Debian's chromium for the
# browser tests) and run the whole suite.
#   bash scripts/test.sh [--gpu] [pytest arguments]; PYTHON selects the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=requirements.txt
if [ "${1:-}" = "--gpu" ]; then REQUIREMENTS=requirements-gpu.txt; shift; fi
"$PYTHON" -m pip install -q -r "$REQUIREMENTS" -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
exec "$PYTHON" -m pytest -q tests "$@"
