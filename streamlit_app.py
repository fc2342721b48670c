"""Brain-tumor classifier dashboard: entry point (``streamlit run streamlit_app.py``).
Sets the page config and the shared sidebar, then runs the chosen page."""

from ui.app import run_app

run_app()
