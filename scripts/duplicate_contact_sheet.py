"""Contact sheet of the pairs that the contrast-invariant test merges and exact + pHash
grouping alone would not: the evidence behind the duplicate groups, to look at.

    python scripts/duplicate_contact_sheet.py [--data-dir DIR] [--pairs 24] --out sheet.jpg
    python scripts/duplicate_contact_sheet.py --twins checkpoints --out twins.jpg
    python scripts/duplicate_contact_sheet.py --seen checkpoints --out seen.jpg

Each row holds two pairs (left image, right image), labelled with file, class and the
head-view / whole-frame correlations. Pairs are drawn evenly over the range of
correlations, weakest first, so the sheet shows the borderline merges, not only the
obvious ones. Prints how many pairs and groups the test adds, and the mixed-label
groups before and after. ``--twins MODEL``: the pairs MODEL's twins pass adds instead.
``--seen MODEL``: every test image of MODEL that its own "seen in training" check marks,
beside the training image it matched, to look at whether the two are one slice.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data import dedup  # noqa: E402
from engine.data.imageio import decode_path  # noqa: E402
from engine.data.sources import discover  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--out", required=True)
    parser.add_argument("--twins", metavar="MODEL", help="show the pairs the twins pass of MODEL ('shipped' or a "
                        "model folder) adds to the pixel tests instead")
    parser.add_argument("--seen", metavar="MODEL", help="show MODEL's test images that its seen-in-training "
                        "check marks, each beside its most similar training image")
    args = parser.parse_args()
    if args.seen:
        show_seen(args)
        return
    sources, _ = discover(args.data_dir)
    images = list(ThreadPoolExecutor(4).map(lambda s: decode_path(s.path), sources))
    labels = np.array([s.label for s in sources])
    digests = [dedup.pixel_digest(i) for i in images]
    hashes = [dedup.perceptual_hashes(i) for i in images]
    descriptors = np.stack(list(ThreadPoolExecutor(4).map(dedup.contrast_descriptor, images)))
    before = dedup.group_duplicates(digests, [h[0] for h in hashes], [h[1] for h in hashes], 4, min_correlation=0.0)
    after = dedup.group_duplicates(digests, [h[0] for h in hashes], [h[1] for h in hashes], 4,
                                   descriptors=descriptors)

    def mixed(groups):
        return sum(len(set(labels[groups == g])) > 1 for g in np.unique(groups))
    new_pairs = [(a, b) for a, b in dedup.correlated_pairs(descriptors) if before[a] != before[b]]
    print(f"{len(images)} images: {len(np.unique(before))} groups by exact + pHash, {len(np.unique(after))} "
          f"with the contrast-invariant test; {len(new_pairs)} pairs across former groups; "
          f"mixed-label groups {mixed(before)} before, {mixed(after)} after")
    if args.twins:
        show_twins(args, sources, images, labels, after)
        return
    strength = [(max(head, whole - dedup.WHOLE_FRAME_MARGIN, parts), head, whole, parts)
                for head, whole, parts in dedup.pair_correlations(descriptors, new_pairs).T.tolist()]
    order = np.argsort([s[0] for s in strength])
    picks = order[np.linspace(0, len(order) - 1, min(args.pairs, len(order))).round().astype(int)] if len(order) else []
    draw_sheet([new_pairs[i] for i in picks], [f"head {strength[i][1]:.3f} whole {strength[i][2]:.3f} parts {strength[i][3]:.3f}"
                                                for i in picks],
               sources, images, args.out)


def show_twins(args, sources, images, labels, groups) -> None:
    """The pairs the twins pass (engine.training.twins) adds on top of the pixel tests:
    one pair per newly merged couple of groups (its most similar), weakest first."""
    from engine.data.dedup import similar_pairs
    from engine.evaluation.evaluate import predict_outputs
    from engine.serving.inference import load_model
    from engine.serving.neighbours import NeighbourIndex, embed
    from engine.training.twins import model_folder
    folder = model_folder(args.twins)
    threshold = NeighbourIndex.load(folder).seen_threshold
    _, features = predict_outputs(load_model(folder), [s.path for s in sources])
    vectors = embed(features)
    pairs = [(a, b) for a, b in similar_pairs(vectors, threshold) if groups[a] != groups[b]]
    best: dict = {}
    for a, b in pairs:
        key = tuple(sorted((groups[a], groups[b])))
        similarity = float(vectors[a] @ vectors[b])
        if key not in best or similarity > best[key][0]:
            best[key] = (similarity, a, b)
    merged = dedup.group_duplicates([str(g) for g in groups], [0] * len(groups), [0] * len(groups), -1,
                                    extra_pairs=np.array(pairs, np.int64).reshape(-1, 2))
    mixed = sum(len(set(labels[merged == g])) > 1 for g in np.unique(merged))
    print(f"twins at feature similarity >= {threshold:.4f}: {len(pairs)} pairs across {len(best)} couples of "
          f"groups; groups {len(np.unique(groups))} -> {len(np.unique(merged))}; mixed-label groups after: {mixed}")
    chosen = sorted(best.values())[:args.pairs]
    draw_sheet([(a, b) for _, a, b in chosen], [f"feature similarity {s:.4f}" for s, _, _ in chosen],
               sources, images, args.out)


def show_seen(args) -> None:
    """The test images a model's own neighbour check calls "seen in training", each with
    the training image it matched, most similar first."""
    from types import SimpleNamespace
    from engine import layout
    from engine.data.manifest import read_manifest
    from engine.evaluation.evaluate import predict_outputs
    from engine.serving.inference import load_model
    from engine.training.twins import model_folder
    folder = model_folder(args.seen)
    model = load_model(folder)
    test = [r for r in read_manifest(folder / layout.MANIFEST) if r.usable and r.split == "test"]
    _, features = predict_outputs(model, [r.path for r in test])
    found = model.neighbours.query(features, 1)
    seen = sorted(((f["neighbours"][0]["similarity"], row, f["neighbours"][0]) for row, f in zip(test, found)
                   if f["seen_in_training"]), key=lambda item: -item[0])
    print(f"{len(seen)} of {len(test)} test images seen in training (threshold {model.neighbours.seen_threshold:.4f}) "
          f"in {len({row.group for _, row, _ in seen})} of {len({r.group for r in test})} test groups")
    for similarity, row, match in seen:
        print(f"  {Path(row.path).parent.name}/{Path(row.path).name} ~ "
              f"{Path(match['path']).parent.name}/{Path(match['path']).name} {similarity:.4f}")
    chosen = seen[:args.pairs]
    paths = [p for _, row, match in chosen for p in (row.path, match["path"])]
    images = [decode_path(p) for p in paths]
    draw_sheet([(2 * i, 2 * i + 1) for i in range(len(chosen))], [f"similarity {s:.4f}" for s, _, _ in chosen],
               [SimpleNamespace(path=p) for p in paths], images, args.out)


def draw_sheet(pairs, captions, sources, images, out: str, side: int = 150) -> None:
    """Two pairs per row: each image with its class folder and file name, the pair's
    figure under the first."""
    sheet = Image.new("RGB", (side * 4, side * max(1, (len(pairs) + 1) // 2)), "white")
    for slot, ((a, b), caption) in enumerate(zip(pairs, captions)):
        for k, item in enumerate((a, b)):
            tile = Image.fromarray(images[item]).convert("RGB").resize((side, side))
            draw = ImageDraw.Draw(tile)
            draw.text((3, 3), f"{Path(sources[item].path).parent.name}/{Path(sources[item].path).name}", fill=(255, 255, 0))
            if k == 0:
                draw.text((3, side - 14), caption, fill=(0, 255, 0))
            sheet.paste(tile, ((slot % 2) * 2 * side + k * side, (slot // 2) * side))
    sheet.save(out, quality=80)
    print(f"{len(pairs)} pairs written to {out}")


if __name__ == "__main__":
    main()
