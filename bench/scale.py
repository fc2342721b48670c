"""The data path at hospital scale: build a manifest (decode, hash, score), group
duplicates and split, on a synthetic folder of N small slice-like images.

    python bench/scale.py --images N [--folder DIR] [--pool threads|processes] [--cache FILE]
    python bench/scale.py --hashes N                     # duplicate grouping alone
    python bench/scale.py --inspect br35h|FOLDER         # decode+hash alone: threads vs processes

--images: N seeded 64x64 PNG "slices" (an ellipse head with texture and a bright lesion
in half of them, under yes/ and no/), 2% of them planted copies (re-contrasted,
mirrored or re-encoded); the folder is made once and reused. --hashes: N random 64-bit
hashes with N/1000 planted near pairs, half of them mirrored; checks that every planted
pair is grouped and nothing else is.

The last line is ``scale N: <seconds> s, <ms> ms/image, peak RSS <GB> GB``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KB on Linux


def make_folder(folder: Path, count: int, seed: int = 0) -> None:
    from PIL import Image, ImageEnhance
    if (folder / "done").exists() and int((folder / "done").read_text()) == count:
        return
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    for label in ("yes", "no"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    originals = []
    for index in range(count):
        label = "yes" if index % 2 else "no"
        if index % 50 == 49 and originals:  # a planted copy of an earlier slice
            source_label, source = originals[int(rng.integers(len(originals)))]
            image = Image.open(source)
            kind = index % 3
            image = (ImageEnhance.Contrast(image).enhance(1.6) if kind == 0 else
                     image.transpose(Image.FLIP_LEFT_RIGHT) if kind == 1 else image.rotate(0))
            image.save(folder / source_label / f"copy_{index}.png")
            continue
        cy, cx = 32 + rng.normal(0, 2, 2)
        ry, rx = rng.uniform(22, 28), rng.uniform(17, 23)
        head = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        texture = rng.normal(0, 1, (8, 8))
        texture = np.kron(texture, np.ones((8, 8)))
        pixels = np.where(head, 90 + 25 * texture + rng.normal(0, 6, (64, 64)), rng.normal(4, 3, (64, 64)))
        if label == "yes":
            ly, lx = cy + rng.uniform(-10, 10), cx + rng.uniform(-8, 8)
            pixels[((yy - ly) ** 2 + (xx - lx) ** 2) <= rng.uniform(9, 25)] = 220
        path = folder / label / f"{label}_{index}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        originals.append((label, path))
    (folder / "done").write_text(str(count))


def plant_contrast_copies(folder: Path, copies: int, seed: int = 0) -> list[tuple[str, str]]:
    """``copies`` contrast-changed copies of real Br35H slices (gamma, contrast stretch,
    histogram shift, mirrored), each beside its original, in the synthetic folder's class
    folders. Returns (original, copy) path pairs."""
    from PIL import Image, ImageOps

    from engine.data.imageio import decode_path
    from engine.data.sources import discover
    rng = np.random.default_rng(seed)
    images, _ = discover(None)
    chosen = [images[i] for i in rng.choice(len(images), copies, replace=False)]
    pairs = []
    for index, image in enumerate(chosen):
        rgb = decode_path(str(image.path))
        label = "yes" if image.label == 1 else "no"
        original = folder / label / f"br35h_{index}.png"
        Image.fromarray(rgb).save(original)
        grey = rgb.astype(np.float32) / 255.0
        kind = index % 4
        changed = (np.clip(grey ** rng.uniform(0.5, 2.0), 0, 1) if kind == 0 else
                   np.clip((grey - 0.1) * 1.6, 0, 1) if kind == 1 else
                   np.clip(grey * 0.7 + 0.2, 0, 1) if kind == 2 else
                   np.asarray(ImageOps.mirror(Image.fromarray(rgb)), np.float32) / 255.0)
        copy = folder / label / f"br35h_{index}_copy.png"
        Image.fromarray((changed * 255).astype(np.uint8)).save(copy)
        pairs.append((str(original), str(copy)))
    return pairs


def bench_images(count: int, folder: Path, pool: str = "auto", cache: str = "", contrast_copies: int = 0) -> None:
    from engine.data.manifest import build_manifest
    started = time.time()
    make_folder(folder, count)
    planted = plant_contrast_copies(folder, contrast_copies) if contrast_copies else []
    print(f"folder of {count} images ready in {time.time() - started:.0f} s (not timed below)", flush=True)
    started = time.time()
    # No inspection cache unless --cache names one: the first build is what is timed.
    rows, summary = build_manifest(str(folder), pool=pool, cache=cache or None)
    seconds = time.time() - started
    print(f"inspection in {pool}" + (f", cache {cache}" if cache else ", no cache"))
    print(f"{len(rows)} rows, {summary['groups']} groups, largest {summary['largest_group']}, "
          f"random-split leak {summary['leak_if_random_split']['val']:.3f}")
    print(f"scale {count}: {seconds:.1f} s, {1000 * seconds / count:.2f} ms/image, peak RSS {peak_rss_gb():.2f} GB")
    if planted:
        group_of = {r.path: r.group for r in rows}
        grouped = sum(group_of.get(o) is not None and group_of.get(o) == group_of.get(c) for o, c in planted)
        print(f"contrast copies: {grouped}/{len(planted)} grouped (with {len(rows)} images in all)")


def bench_inspection(folder: str | None, pools: list[str], rounds: int = 2) -> None:
    """Decoding, hashing and scoring alone (no grouping), per pool: what threads or
    processes change. ``folder`` None = Br35H."""
    import statistics

    from engine.data.manifest import inspect_sources
    from engine.data.sources import discover
    sources, _ = discover(folder)
    for pool in pools:
        times = []
        for _ in range(rounds):
            started = time.time()
            inspect_sources(sources, True, pool=pool, cache=None)
            times.append(time.time() - started)
        seconds = statistics.median(times)
        print(f"inspection of {len(sources)} files in {pool}: {seconds:.1f} s (median of {rounds}), "
              f"{1000 * seconds / len(sources):.2f} ms/file", flush=True)


def bench_hashes(count: int) -> None:
    from engine.data import dedup
    sys.path.insert(0, str(ROOT / "tests"))
    from test_dedup_splits import planted_hashes
    hashes, mirrored, planted = planted_hashes(count, count // 1000, seed=7)
    digests = [""] * count  # no exact copies: the hash test alone
    started = time.time()
    groups = dedup.group_duplicates(digests, hashes, mirrored, 4)
    seconds = time.time() - started
    together = all(groups[a] == groups[b] for a, b in planted)
    merged = count - (groups.max() + 1)
    print(f"{len(planted)} planted pairs ({len(planted) // 2} mirrored): all grouped {together}; "
          f"images merged into another's group: {merged} (planted: {len(planted)})")
    print(f"scale {count}: {seconds:.1f} s, {1000 * seconds / count:.4f} ms/image, peak RSS {peak_rss_gb():.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", type=int)
    what.add_argument("--hashes", type=int)
    what.add_argument("--inspect", metavar="FOLDER", help="time decoding+hashing alone with threads and "
                      "with processes ('br35h' = the default data set)")
    parser.add_argument("--folder", help="where the synthetic folder lives (default runs/scale_<N>)")
    parser.add_argument("--pool", choices=("auto", "threads", "processes"), default="auto",
                        help="what decodes and hashes the files (engine.data.manifest.inspect_sources)")
    parser.add_argument("--cache", default="", help="an inspection cache file: run twice to time a "
                        "rebuild of an unchanged folder")
    parser.add_argument("--contrast-copies", type=int, default=0, metavar="K",
                        help="with --images: plant K real Br35H slices and a contrast-changed or mirrored copy "
                        "of each, and say how many copies were grouped with their original")
    args = parser.parse_args()
    if args.inspect:
        bench_inspection(None if args.inspect == "br35h" else args.inspect, ["threads", "processes"])
    elif args.hashes:
        bench_hashes(args.hashes)
    else:
        bench_images(args.images, Path(args.folder or ROOT / "runs" / f"scale_{args.images}"),
                     args.pool, args.cache, args.contrast_copies)


if __name__ == "__main__":
    main()
