"""How far the out-of-distribution flag sets non-brain pictures apart from scanner slices.

    python bench/ood_margin.py [--model checkpoints]

Builds a set of images that are not brain slices, all from what is installed (no
download): scikit-learn's two sample photographs (colour, and in grey, and crops), and
synthetic pictures (gradients, noise, a checkerboard, stripes, text on white, flat
fields, smooth blobs). Scores them and the model's own test split (brain MRI it never
trained on) with engine.serving.inference.predict_files, and prints each non-brain
image's score (> 1 = flagged), the share flagged on each side, and the margin: the
lowest non-brain score over the highest score that 99% of test slices stay under.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def non_brain_images() -> dict[str, np.ndarray]:
    from PIL import Image, ImageDraw
    from sklearn.datasets import load_sample_images
    rng = np.random.default_rng(0)
    images = {}
    for name, photo in zip(("china", "flower"), load_sample_images().images):
        grey = np.repeat(np.asarray(Image.fromarray(photo).convert("L"))[..., None], 3, axis=2)
        images[f"{name} photo"] = photo
        images[f"{name} photo, grey"] = grey
        images[f"{name} photo, centre crop"] = photo[100:400, 150:450]
        images[f"{name} photo, grey crop"] = grey[100:400, 150:450]
    yy, xx = np.mgrid[:256, :256] / 255.0
    grey = lambda a: np.repeat(np.clip(a * 255, 0, 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    images["horizontal gradient"] = grey(xx)
    images["radial gradient"] = grey(1 - np.hypot(xx - 0.5, yy - 0.5) * 1.4)
    images["uniform noise"] = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    images["grey noise"] = grey(rng.uniform(0, 1, (256, 256)))
    images["checkerboard"] = grey(((np.floor(xx * 8) + np.floor(yy * 8)) % 2))
    images["stripes"] = grey((np.sin(xx * 40) + 1) / 2)
    images["black"] = grey(np.zeros((256, 256)))
    images["mid grey"] = grey(np.full((256, 256), 0.5))
    blobs = sum(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.01) for cx, cy in rng.uniform(0.2, 0.8, (5, 2)))
    images["smooth blobs"] = grey(blobs / blobs.max())
    text = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(text)
    for line in range(10):
        draw.text((10, 10 + 24 * line), "Patient report: no findings " * 2, fill="black")
    images["text on white"] = np.asarray(text)
    colours = np.zeros((256, 256, 3), np.uint8)
    colours[..., 0], colours[..., 1], colours[..., 2] = xx * 255, yy * 255, 128
    images["colour chart"] = colours
    return images


def encoded(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints"))
    args = parser.parse_args()
    from engine.data.manifest import read_manifest, rows_for_split
    from engine.serving.inference import load_model, predict_files
    model = load_model(args.model)
    others = non_brain_images()
    scored = predict_files(model, [(name, encoded(rgb)) for name, rgb in others.items()])
    test = rows_for_split(read_manifest(Path(args.model) / "manifest.csv"), "test")
    brain = predict_files(model, [(r.path, Path(r.path).read_bytes()) for r in test])
    brain_scores = np.array([p.ood_score for p in brain])
    print(f"{'image':32s} score  flagged")
    for p in scored:
        print(f"{p.name:32s} {p.ood_score:6.2f}  {p.out_of_distribution}")
    other_scores = np.array([p.ood_score for p in scored])
    high = float(np.percentile(brain_scores, 99))
    print(f"test split ({len(brain)} brain MRI slices): {np.mean(brain_scores > 1):.1%} flagged, "
          f"99th percentile of scores {high:.2f}, max {brain_scores.max():.2f}")
    print(f"non-brain ({len(scored)} images): {np.mean(other_scores > 1):.1%} flagged, "
          f"lowest score {other_scores.min():.2f} ({scored[int(np.argmin(other_scores))].name})")
    print(f"margin: lowest non-brain score / 99th percentile of brain scores = {other_scores.min() / high:.2f}")


if __name__ == "__main__":
    main()
