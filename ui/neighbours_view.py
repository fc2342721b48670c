"""The nearest training images of an image, shown the same way on Predict, Errors and
Label review: five thumbnails with their label and similarity, and a note when the
model has effectively seen the image (a near-copy of a training image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from ui.common import square

LABEL = {0: "no tumor", 1: "tumor"}


@st.cache_data(max_entries=2048, show_spinner=False)
def thumbnail(path: str, side: int = 112) -> np.ndarray | None:
    from PIL import Image

    from engine.data.imageio import ImageDecodeError, decode_path
    try:
        return np.asarray(Image.fromarray(square(decode_path(path))).resize((side, side)))
    except (ImageDecodeError, OSError):
        return None


def nearest_of(model, rgb: np.ndarray, k: int = 5, exclude: str | None = None) -> dict | None:
    """The model's ``k`` nearest pool images of a decoded image (None without a stored
    pool); ``exclude`` leaves the image itself out when it is a pool image."""
    if model.neighbours is None:
        return None
    features = model.predict_pixels(model.model_input(rgb)[None])["features"]
    if features is None:
        return None
    return model.neighbours.query(features, k, exclude=[exclude])[0]


@st.cache_data(max_entries=512, show_spinner=False)
def _nearest_of_file(model_dir: str, path: str, stamp: float, k: int) -> dict | None:
    from ui.common import model_for
    from engine.data.imageio import decode_path
    return nearest_of(model_for(Path(model_dir)), decode_path(path), k, exclude=path)


def nearest_of_file(model_dir: Path, path: str, k: int = 5) -> dict | None:
    """``nearest_of`` for a stored image (itself left out), kept across reruns per model
    and file: a page of them is a feature pass per image, on every click otherwise."""
    from ui.common import model_stamp
    return _nearest_of_file(str(model_dir), path, model_stamp(Path(model_dir)), k)


def show_neighbours(found: dict | None, own_label: int | None = None, *, title: str = "Nearest training images") -> None:
    """Thumbnails of ``found['neighbours']`` with label, group and similarity."""
    if not found or not found.get("neighbours"):
        return
    near = found["neighbours"]
    agree = "" if own_label is None else (
        f" · {sum(n['label'] == own_label for n in near)} of {len(near)} carry its label")
    copies = found.get("copies_left_out") or 0
    st.markdown(f"**{title}**{agree}")
    if copies:
        st.caption(f"Its own duplicate group ({copies} other {'copy' if copies == 1 else 'copies'}) is left "
                   "out: these are other slices.")
    for column, item in zip(st.columns(len(near)), near):
        picture = thumbnail(item["path"])
        # Short enough not to wrap a character per line in a narrow column; the groups
        # are listed once below the row.
        caption = f"{LABEL.get(item['label'], item['label'])} · {item['similarity']:.2f}"
        if picture is None:
            column.caption(f"{Path(item['path']).name}: not readable here · {caption}")
        else:
            column.image(picture, caption=caption, width="stretch")
    st.caption("Under each: its label · feature similarity (1 = the same image; "
               "groups " + ", ".join(str(item["group"]) for item in near) + ")")
