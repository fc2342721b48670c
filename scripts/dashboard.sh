#!/usr/bin/env bash
# Set up (install the requirements) and start the dashboard on http://localhost:8501
#   bash scripts/dashboard.sh          # CPU TensorFlow
#   bash scripts/dashboard.sh --gpu    # NVIDIA GPUs: tensorflow[and-cuda] instead of tensorflow-cpu
# PYTHON selects the interpreter (default python3); extra arguments go to streamlit run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=requirements.txt
if [ "${1:-}" = "--gpu" ]; then REQUIREMENTS=requirements-gpu.txt; shift; fi
"$PYTHON" -m pip install -q -r "$REQUIREMENTS"
# ui.serve = streamlit run streamlit_app.py, with the default model loaded before the first visit
exec "$PYTHON" -m ui.serve "$@"
