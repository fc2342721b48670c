"""The pixel-appearance out-of-distribution statistics (engine.serving.appearance),
fitted on synthetic "slices" unlike Br35H: the statistics follow the data they are
fitted on, not a fixed idea of what a brain looks like."""

import numpy as np

from engine.serving import appearance
from engine import layout


def slice_like(rng, size=96):
    """A bright ellipse with texture on a black surround, at a random place and size."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    ry, rx = rng.uniform(0.3, 0.42, 2) * size
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    grey = np.where(inside, rng.uniform(90, 160) + rng.normal(0, 12, (size, size)), rng.normal(4, 2, (size, size)))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_descriptor_has_its_documented_size_and_ignores_exposure():
    rng = np.random.default_rng(0)
    picture = slice_like(rng)
    vector = appearance.descriptor(picture)
    assert vector.shape == (appearance.DIMENSIONS,) and np.isfinite(vector).all()
    darker = (picture.astype(np.float32) * 0.6).astype(np.uint8)
    noise = rng.integers(0, 256, picture.shape).astype(np.uint8)
    # Scaled to its own 99.5th percentile: a darker exposure of the same slice stays
    # far nearer to it than another kind of picture.
    assert (np.linalg.norm(appearance.descriptor(darker) - vector)
            < 0.2 * np.linalg.norm(appearance.descriptor(noise) - vector))


def test_fitted_statistics_pass_unseen_slices_and_flag_other_pictures(tmp_path):
    rng = np.random.default_rng(1)
    train = np.array([appearance.descriptor(slice_like(rng)) for _ in range(160)])
    held = np.array([appearance.descriptor(slice_like(rng)) for _ in range(40)])
    gaussians = appearance.fit_appearance(np.concatenate([train, held]), np.array([-1] * 160 + [0] * 40), members=1)
    gaussians.save(tmp_path / layout.APPEARANCE)
    loaded = appearance.load(tmp_path)
    unseen = [appearance.score(loaded, slice_like(rng)) for _ in range(40)]
    assert np.mean(np.array(unseen) > 1) <= 0.1, unseen
    yy, xx = np.mgrid[:96, :96]
    others = {"noise": rng.integers(0, 256, (96, 96)), "gradient": xx * 2.6,
              "bright page": np.full((96, 96), 230) - 200 * ((yy // 12) % 2 == 0) * (xx > 10)}
    for name, grey in others.items():
        picture = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        assert appearance.score(loaded, picture) > 1.5, name


def test_unreadable_files_are_left_out_of_the_fit(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(2)
    paths = []
    for number in range(30):
        path = tmp_path / f"s{number}.png"
        Image.fromarray(slice_like(rng)).save(path)
        paths.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    described = appearance.describe_paths(paths + [str(broken)], threads=2)
    assert described.shape == (31, appearance.DIMENSIONS)
    assert np.isnan(described[-1]).all() and np.isfinite(described[:-1]).all()
    gaussians = appearance.fit_appearance(described, np.array([0] * 15 + [1] * 16), members=2)
    assert gaussians.means.shape == (2, appearance.DIMENSIONS) and np.isfinite(gaussians.thresholds).all()
