"""How far the out-of-distribution flag sets non-brain pictures apart from scanner slices.

    python bench/ood_margin.py [--model checkpoints]

Builds a set of images that are not brain slices, all from what is installed (no
download): scikit-learn's two sample photographs (colour, and in grey, and crops), and
synthetic pictures (gradients, noise, a checkerboard, stripes, text on white, flat
fields, smooth blobs). The pixel-appearance check (engine.serving.appearance) was
designed with this set in view, so the bench also scores a held-out set it was not:
scikit-image's bundled sample pictures and face crops (bench/requirements.txt). And
real scanner slices from other sources (pydicom, nibabel), reported on their own.

Scores them and the model's own test split (brain MRI it never trained on) with
engine.serving.inference.predict_files, and prints each image's feature score, pixel
score and the flag's score (the larger; > 1 = flagged), the share flagged, and the
margin: the lowest non-brain score over the score 99% of test slices stay under.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402

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


def held_out_images() -> dict[str, np.ndarray]:
    """Pictures the appearance descriptor was not designed on: scikit-image's bundled
    sample images (photographs, microscopy, retina, histology, astronomy, text, a
    Shepp-Logan phantom) and ten of its face crops. Empty without scikit-image
    (``pip install -r bench/requirements.txt``)."""
    try:
        import skimage.data
    except ImportError:
        return {}
    from PIL import Image
    folder = Path(skimage.data.__file__).parent
    images = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".png", ".jpg", ".gif"):
            picture = np.asarray(Image.open(path).convert("RGB"))
            if min(picture.shape[:2]) >= 32:
                images[path.name] = picture
    faces = np.load(folder / "lfw_subset.npy")[:10]
    for number, face in enumerate(faces):
        grey = np.asarray(Image.fromarray((face * 255).astype(np.uint8)).resize((100, 100)))
        images[f"face {number}"] = np.repeat(grey[..., None], 3, axis=2)
    return images


def scanner_slices() -> dict[str, np.ndarray]:
    """Real scanner slices from other sources than the model's data: pydicom's MR and
    CT samples and nibabel's MR volume (three of its slices)."""
    import nibabel
    from pydicom.data import get_testdata_file

    from engine.data.imageio import decode_path, read_scan
    images = {name: decode_path(get_testdata_file(name)) for name in ("MR_small.dcm", "CT_small.dcm")}
    volume = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    addressed = list(read_scan(volume.read_bytes()).addressed("anatomical.nii"))
    for name, _, rgb in addressed[::len(addressed) // 3][:3]:
        images[name] = rgb
    return images


def encoded(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def score_parts(model, named: dict[str, np.ndarray]) -> list[tuple[str, float, float, float]]:
    """(name, feature score, pixel score, the flag's score = the larger) per image."""
    from engine.serving.inference import predict_files
    predictions = predict_files(model, [(name, encoded(rgb)) for name, rgb in named.items()])
    rows = []
    for (name, rgb), prediction in zip(named.items(), predictions):
        pixels = max((score for _, score in model.pixel_findings(rgb)), default=0.0)
        features = model.predict_pixels(model.model_input(rgb)[None])["features"]
        feature = float(model.ood.scores(features)[0])
        rows.append((name, feature, pixels, prediction.ood_score))
    return rows


def report(title: str, rows, brain_high: float) -> float:
    print(f"\n{title}\n{'image':34s} features  pixels  flag score  flagged")
    for name, feature, pixels, score in rows:
        print(f"{name:34s} {feature:8.2f} {pixels:7.2f} {score:10.2f}  {score > 1}")
    scores = np.array([score for *_, score in rows])
    lowest = int(np.argmin(scores))
    print(f"{len(rows)} images: {np.mean(scores > 1):.1%} flagged, lowest {scores[lowest]:.2f} "
          f"({rows[lowest][0]}); margin (lowest / 99th percentile of test slices) "
          f"{scores[lowest] / brain_high:.2f}")
    return float(scores[lowest])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints"))
    args = parser.parse_args()
    from engine.data.manifest import read_manifest, rows_for_split
    from engine.serving.inference import load_model, predict_files
    model = load_model(args.model)
    if model.appearance is None:
        print("this model has no appearance statistics (appearance.npz): pixel score from fixed checks only")
    test = rows_for_split(read_manifest(Path(args.model) / layout.MANIFEST), "test")
    brain = predict_files(model, [(r.path, Path(r.path).read_bytes()) for r in test])
    brain_scores = np.array([p.ood_score for p in brain])
    high = float(np.percentile(brain_scores, 99))
    print(f"test split ({len(brain)} brain MRI slices the model never trained on): "
          f"{np.mean(brain_scores > 1):.1%} flagged, 99th percentile of scores {high:.2f}, "
          f"max {brain_scores.max():.2f}")
    report("non-brain pictures the checks were designed with", score_parts(model, non_brain_images()), high)
    held_out = held_out_images()
    if held_out:
        report("held-out pictures (scikit-image's samples; not used in the design)",
               score_parts(model, held_out), high)
    else:
        print("\nheld-out pictures: scikit-image is not installed (pip install -r bench/requirements.txt)")
    report("scanner slices from other sources (not brain MRI like Br35H's; flagging them is not an error)",
           score_parts(model, scanner_slices()), high)


if __name__ == "__main__":
    main()
