"""Brain-tumor classifier dashboard: entry point. Sets the page config and the shared
sidebar, then runs the chosen page (``streamlit run streamlit_app.py``)."""

import streamlit as st

from ui.common import sidebar

st.set_page_config(page_title="Brain-tumor classifier dashboard", page_icon="🧠", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/predict.py", title="Predict", icon="🔎"),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/runs.py", title="Runs", icon="📋"),
    st.Page("pages/evaluate.py", title="Evaluate", icon="📈"),
    st.Page("pages/errors.py", title="Errors", icon="❌"),
]
navigation = st.navigation(pages)
sidebar()
navigation.run()
