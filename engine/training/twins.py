"""Twins: images a trained model sees as nearly the same slice, merged into one
duplicate group before a split.

The pixel tests of engine.data.dedup (exact, perceptual hash, contrast-invariant
correlation) miss two kinds of relatives on Br35H: heavily processed copies of one slice
(sharpened, re-cropped past the head box) and neighbouring slices of one series, most
likely one patient. A model's pooled features put both next to each other. This pass
embeds every usable image with a trained model (by default the shipped ensemble) and
unions pairs whose cosine similarity reaches ``min_similarity`` (0 = the model's own
"seen in training" threshold, chosen on its pool's known duplicates;
engine.serving.neighbours). Time: one forward pass per image, then an exact quadratic
comparison (engine.data.dedup.similar_pairs).
"""

from __future__ import annotations

import logging
from pathlib import Path


from engine.data.dedup import similar_pairs
from engine.serving.inference import SHIPPED_MODEL_DIR
from engine.serving.neighbours import NeighbourIndex, embed

log = logging.getLogger(__name__)


def model_folder(name: str) -> Path:
    """"shipped" or "checkpoints" = the shipped model; anything else a folder path."""
    return SHIPPED_MODEL_DIR if name in ("shipped", "checkpoints") else Path(name)


def twin_pass(model: str, min_similarity: float = 0.0):
    """A ``twins`` callable for engine.data.manifest.build_manifest."""
    folder = model_folder(model)

    def find(rows):
        from engine.evaluation.evaluate import predict_outputs
        from engine.serving.inference import load_model
        threshold = min_similarity
        if threshold <= 0:
            index = NeighbourIndex.load(folder)
            threshold = index.seen_threshold if index else 0.99
        _, features = predict_outputs(load_model(folder), [r.path for r in rows])
        if features is None:
            return None, None
        pairs = similar_pairs(embed(features), threshold)
        log.info("twins: %d pairs of images at feature similarity >= %.4f (model %s)", len(pairs),
                 threshold, folder)
        return pairs, {"model": str(folder.name if folder == SHIPPED_MODEL_DIR else folder),
                       "min_similarity": float(threshold), "pairs": int(len(pairs)),
                       "rule": "cosine similarity of the model's pooled features (members averaged)"}
    return find
