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

A twins pass depends on the model that ran it, and a model folder is overwritten when a
new model is shipped; ``kept_groups`` carries the groups of an earlier manifest (which
hold its twins) into a new split instead, so a split stays reproducible from shipped
files: ``--twin-groups checkpoints/manifest.csv`` with the manifest's own seed gives its
groups back.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from engine.data.dedup import similar_pairs
from engine.data.manifest import read_manifest
from engine.data.sources import relocate
from engine.evaluation.evaluate import predict_outputs
from engine.serving.inference import SHIPPED_MODEL_DIR, load_model
from engine.serving.neighbours import NeighbourIndex, embed

log = logging.getLogger(__name__)


def model_folder(name: str) -> Path:
    """"shipped" or "checkpoints" = the shipped model; anything else a folder path."""
    return SHIPPED_MODEL_DIR if name in ("shipped", "checkpoints") else Path(name)


def twin_pass(model: str, min_similarity: float = 0.0):
    """A ``twins`` callable for engine.data.manifest.build_manifest."""
    folder = model_folder(model)

    def find(rows):
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


def kept_groups(manifest: str | Path):
    """A ``twins`` callable: pairs that keep together the images one group of an earlier
    manifest holds (matched by path, relocated as read_manifest does; images the manifest
    does not know are left to the other tests)."""
    manifest = Path(manifest)

    def find(rows):
        position = {row.path: i for i, row in enumerate(rows)}
        members: dict[int, list[int]] = {}
        for earlier in read_manifest(manifest):
            if earlier.usable and earlier.group >= 0 and earlier.path in position:
                members.setdefault(earlier.group, []).append(position[earlier.path])
        pairs = np.array([(m[0], other) for m in members.values() for other in m[1:]], np.int64).reshape(-1, 2)
        matched = sum(len(m) for m in members.values())
        log.info("twins: %d pairs keep %s's groups (%d of %d images matched)", len(pairs), manifest,
                 matched, len(rows))
        return pairs, {"groups_from": str(manifest), "pairs": int(len(pairs)), "matched_images": int(matched),
                       "rule": "images in one group of the earlier manifest stay in one group"}
    return find


def listed_pairs(table: str | Path):
    """A ``twins`` callable: pairs a person confirmed to be one slice, from a CSV with
    columns ``path_a``, ``path_b`` (paths as a manifest writes them, relocated as
    read_manifest does; a ``note`` column is kept for the reader). What no automatic test
    catches (a copy sharpened beyond the pixel tests and under a model's seen threshold)
    is merged once someone has looked at it on a contact sheet. Pairs naming an image the
    scan does not hold are left out and counted."""
    table = Path(table)
    with open(table, newline="") as handle:
        listed = [(relocate(r["path_a"]), relocate(r["path_b"])) for r in csv.DictReader(handle)]

    def find(rows):
        position = {row.path: i for i, row in enumerate(rows)}
        pairs = np.array([(position[a], position[b]) for a, b in listed if a in position and b in position],
                         np.int64).reshape(-1, 2)
        log.info("twins: %d of %d listed pairs from %s", len(pairs), len(listed), table)
        return pairs, {"pairs_from": str(table), "pairs": int(len(pairs)), "listed": len(listed),
                       "rule": "pairs a person confirmed to be one slice"}
    return find


def combined(finders):
    """One ``twins`` callable from several: their pairs together, their descriptions as
    a list under ``sources`` (one finder is returned as it is)."""
    if len(finders) == 1:
        return finders[0]

    def find(rows):
        found = [finder(rows) for finder in finders]
        pairs = [p for p, _ in found if p is not None and len(p)]
        merged = np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)
        return merged, {"pairs": int(len(merged)), "sources": [summary for _, summary in found if summary]}
    return find
