"""The app shell: page config, navigation over app_pages/, shared sidebar. The page
scripts live in app_pages/, not pages/: a folder named pages/ beside the entry file
switches Streamlit to its old multipage mode until st.navigation has run once."""

import streamlit as st

from ui.common import sidebar

PAGES = [
    ("app_pages/home.py", "Home", ":material/home:"),
    ("app_pages/predict.py", "Predict", ":material/image_search:"),
    ("app_pages/train.py", "Train", ":material/model_training:"),
    ("app_pages/data.py", "Data", ":material/dataset:"),
    ("app_pages/map.py", "Map", ":material/scatter_plot:"),
    ("app_pages/runs.py", "Runs", ":material/list:"),
    ("app_pages/evaluate.py", "Evaluate", ":material/analytics:"),
    ("app_pages/errors.py", "Errors", ":material/report:"),
    ("app_pages/label_review.py", "Label review", ":material/fact_check:"),
]


def run_app() -> None:
    st.set_page_config(page_title="Brain-tumor classifier dashboard", page_icon=":material/neurology:",
                       layout="wide")
    navigation = st.navigation([st.Page(path, title=title, icon=icon, default=index == 0)
                                for index, (path, title, icon) in enumerate(PAGES)])
    sidebar()
    navigation.run()
