"""Drawing a Grad-CAM map over its image, for the pages and the report. NumPy and PIL
only: a page that shows heat maps must not import TensorFlow before it has drawn
anything (a cold import takes seconds)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def overlay(rgb: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heat map (jet-like colours) over an HxWx3 uint8 image."""
    cam = np.clip(np.asarray(cam, np.float32), 0.0, 1.0)
    if cam.shape != rgb.shape[:2]:
        cam = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize(
            (rgb.shape[1], rgb.shape[0]), Image.BILINEAR), np.float32) / 255.0
    red = np.clip(1.5 - np.abs(4 * cam - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * cam - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * cam - 1), 0, 1)
    heat = np.stack([red, green, blue], axis=-1) * 255.0
    alpha = opacity * (0.25 + 0.75 * cam[..., None])
    blended = rgb.astype(np.float32) * (1 - alpha) + heat * alpha
    return np.clip(blended, 0, 255).astype(np.uint8)
