"""Contact sheet of the pairs that the contrast-invariant test merges and exact + pHash
grouping alone would not: the evidence behind the duplicate groups, to look at.

    python scripts/duplicate_contact_sheet.py [--data-dir DIR] [--pairs 24] --out sheet.jpg

Each row holds two pairs (left image, right image), labelled with file, class and the
head-view / whole-frame correlations. Pairs are drawn evenly over the range of
correlations, weakest first, so the sheet shows the borderline merges, not only the
obvious ones. Prints how many pairs and groups the test adds, and the mixed-label
groups before and after.
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
    args = parser.parse_args()
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
    views = dedup.comparable_views(descriptors)
    strength = []
    for a, b in new_pairs:
        head, whole = dedup.correlations(views, slice(a, a + 1))[:, 0, b]
        strength.append((max(head, whole - dedup.WHOLE_FRAME_MARGIN), head, whole))
    order = np.argsort([s[0] for s in strength])
    picks = order[np.linspace(0, len(order) - 1, min(args.pairs, len(order))).round().astype(int)] if len(order) else []
    side = 150
    sheet = Image.new("RGB", (side * 4, side * ((len(picks) + 1) // 2)), "white")
    for slot, index in enumerate(picks):
        (a, b), (_, head, whole) = new_pairs[index], strength[index]
        for k, item in enumerate((a, b)):
            tile = Image.fromarray(images[item]).convert("RGB").resize((side, side))
            draw = ImageDraw.Draw(tile)
            draw.text((3, 3), f"{Path(sources[item].path).parent.name}/{Path(sources[item].path).name}", fill=(255, 255, 0))
            if k == 0:
                draw.text((3, side - 14), f"head {head:.3f} whole {whole:.3f}", fill=(0, 255, 0))
            sheet.paste(tile, ((slot % 2) * 2 * side + k * side, (slot // 2) * side))
    sheet.save(args.out, quality=80)
    print(f"{len(picks)} pairs written to {args.out}")


if __name__ == "__main__":
    main()
