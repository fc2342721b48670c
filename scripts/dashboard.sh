#!/usr/bin/env bash
# Set up (install the requirements) and start the dashboard on http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
exec python3 -m streamlit run streamlit_app.py "$@"
