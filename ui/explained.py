"""Grad-CAM of a stored image, computed once per model and file and kept across reruns:
Errors and Label review draw a page of heat maps, and every click on either page (a
decision saved, a filter changed, Enlarge) reruns the page script. Uncached, Label
review's 8 groups cost 22 Grad-CAM calls on every rerun (0.56 s of a 0.8 s rerun,
profiled on the shipped model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from ui.common import model_for, model_stamp


@st.cache_data(max_entries=512, show_spinner=False)
def _explained(model_dir: str, path: str, stamp: float) -> tuple[np.ndarray, np.ndarray, float]:
    from engine.data.imageio import decode_path
    model = model_for(Path(model_dir))
    rgb = decode_path(path)
    # The model's own view and input (cropped to the head if it was trained so).
    probabilities, cams, _, _ = model.explain_all(model.model_input(rgb)[None])
    return model.view(rgb), cams[0], float(probabilities[0])


def explained(model_dir: Path, path: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(the image as the model frames it, Grad-CAM for the tumor class, calibrated tumor
    probability) of the file ``path`` under the model in ``model_dir``; a recalibration
    (model.json rewritten) computes it again. Raises ImageDecodeError for a bad file."""
    return _explained(str(model_dir), path, model_stamp(Path(model_dir)))
