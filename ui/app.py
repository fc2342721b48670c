"""The app shell: page config, navigation over pages/, shared sidebar."""

import streamlit as st

from ui.common import sidebar

PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/predict.py", "Predict", ":material/image_search:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/data.py", "Data", ":material/dataset:"),
    ("pages/runs.py", "Runs", ":material/list:"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/errors.py", "Errors", ":material/report:"),
    ("pages/label_review.py", "Label review", ":material/fact_check:"),
]


def require_navigation() -> None:
    """Call first in every page. Streamlit treats a folder named pages/ beside the
    entry file as an old-style multipage app until ``st.navigation`` has run once in
    the server process, so a first visit straight to /predict would run the page
    without the app's sidebar and navigation. Switch to navigation mode and run the
    app shell instead."""
    from streamlit.runtime.pages_manager import PagesManager
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        run_app()  # in this same run, so a click that triggered it is not lost
        st.stop()


def run_app() -> None:
    st.set_page_config(page_title="Brain-tumor classifier dashboard", page_icon=":material/neurology:",
                       layout="wide")
    navigation = st.navigation([st.Page(path, title=title, icon=icon, default=index == 0)
                                for index, (path, title, icon) in enumerate(PAGES)])
    sidebar()
    navigation.run()
