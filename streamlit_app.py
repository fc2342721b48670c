"""Brain-tumor classifier dashboard: entry point. Sets the page config and the shared
sidebar, then runs the chosen page (``streamlit run streamlit_app.py``)."""

import streamlit as st

from ui.common import sidebar

st.set_page_config(page_title="Brain-tumor classifier dashboard", page_icon=":material/neurology:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/list:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/errors.py", title="Errors", icon=":material/report:"),
]
navigation = st.navigation(pages)
sidebar()
navigation.run()
