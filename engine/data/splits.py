"""Duplicate-aware, stratified, seeded train/val/test splits, and the leak report that
shows what a random split would have done. Pure NumPy.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

SPLITS = ("train", "val", "test")


def split_groups(
    group_ids: np.ndarray,
    labels: np.ndarray,
    modalities: list[str],
    fractions: tuple[float, float, float],
    seed: int,
) -> np.ndarray:
    """Assign every image a split name so that no duplicate group straddles two splits.

    Groups are stratified by (majority label, modality) and dealt, in a seeded random
    order, to whichever split is furthest below its target share of that stratum,
    counted in images. Returns an array of "train"/"val"/"test".
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    dealt = deal_groups(group_ids, labels, modalities, fractions, seed)
    return np.asarray(SPLITS)[dealt].astype(str)


def fold_groups(group_ids: np.ndarray, labels: np.ndarray, modalities: list[str], folds: int,
                seed: int) -> np.ndarray:
    """Fold index 0..folds-1 for every image: K equal shares dealt by duplicate group,
    stratified by label and modality, seeded (the same dealing as split_groups)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(set(np.asarray(group_ids).tolist())) < folds:
        raise ValueError(f"{folds} folds need at least {folds} distinct duplicate groups")
    return deal_groups(group_ids, labels, modalities, [1.0 / folds] * folds, seed)


def group_members(group_ids) -> dict[int, list[int]]:
    """{group: indices of its images}, groups in order of first appearance."""
    members: dict[int, list[int]] = {}
    for index, group in enumerate(np.asarray(group_ids).tolist()):
        members.setdefault(group, []).append(index)
    return members


def deal_groups(group_ids: np.ndarray, labels: np.ndarray, modalities: list[str],
                fractions, seed: int) -> np.ndarray:
    """Index of the share (0..len(fractions)-1) each image is dealt to; whole
    duplicate groups at a time, each stratum filled towards its target shares."""
    group_ids = np.asarray(group_ids)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    members = group_members(group_ids)
    strata: dict[tuple[int, str], list[int]] = {}
    for group, indices in sorted(members.items()):
        majority = Counter(labels[indices].tolist()).most_common(1)[0][0]
        modality = Counter(modalities[i] for i in indices).most_common(1)[0][0]
        strata.setdefault((majority, modality), []).append(group)
    assignment = np.zeros(len(group_ids), dtype=np.int64)
    target = np.asarray(fractions, dtype=np.float64)
    for key in sorted(strata):
        groups = strata[key]
        order = rng.permutation(len(groups))
        filled = np.zeros(len(target))
        for position in order:
            indices = members[groups[position]]
            total = filled.sum() + len(indices)
            deficit = target * total - filled
            choice = int(np.argmax(np.where(target > 0, deficit, -np.inf)))
            filled[choice] += len(indices)
            assignment[indices] = choice
    return assignment


def keep_placements(group_ids: np.ndarray, dealt, earlier) -> np.ndarray:
    """Each duplicate group placed where most of its members were placed before.

    ``dealt`` is this split's placement of every image (a split name or a fold index),
    ``earlier`` the placement an earlier split gave it, or None for an image it did not
    hold. A group with at least one known member goes whole to its members' most common
    earlier placement (ties: the smallest, so False before True and fold 0 before fold
    1); a group with none keeps ``dealt``. A frozen test split and frozen folds follow:
    a copy found after the split moves the fewest images, and every other image stays.
    """
    result = np.array(dealt, dtype=object)
    for indices in group_members(group_ids).values():
        known = Counter(earlier[i] for i in indices if earlier[i] is not None)
        if known:
            place = min(known.items(), key=lambda item: (-item[1], item[0]))[0]
            for index in indices:
                result[index] = place
    return result


def random_split(count: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """The naive per-image split, kept only to measure how much it leaks."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    n_train = int(round(fractions[0] * count))
    n_val = int(round(fractions[1] * count))
    result = np.empty(count, dtype=object)
    result[order[:n_train]] = "train"
    result[order[n_train:n_train + n_val]] = "val"
    result[order[n_train + n_val:]] = "test"
    return result.astype(str)


def leak_fraction(group_ids: np.ndarray, splits: np.ndarray, held_out: str) -> float:
    """Share of ``held_out`` images that have a duplicate (same group) in train."""
    group_ids = np.asarray(group_ids)
    splits = np.asarray(splits)
    train_groups = set(group_ids[splits == "train"].tolist())
    held = group_ids[splits == held_out]
    if len(held) == 0:
        return 0.0
    return float(np.mean([g in train_groups for g in held.tolist()]))


def split_summary(
    group_ids: np.ndarray, labels: np.ndarray, modalities: list[str], splits: np.ndarray,
    fractions: tuple[float, float, float], seed: int,
) -> dict:
    """Counts per split (images, distinct groups, per class, per modality) and the leak
    a random split of the same sizes would have had."""
    group_ids, labels, splits = np.asarray(group_ids), np.asarray(labels), np.asarray(splits)
    modalities_arr = np.asarray(modalities)
    per_split = {}
    for name in SPLITS:
        mask = splits == name
        per_split[name] = {
            "images": int(mask.sum()),
            "groups": int(len(set(group_ids[mask].tolist()))),
            "tumor": int((labels[mask] == 1).sum()),
            "no_tumor": int((labels[mask] == 0).sum()),
            "modalities": dict(Counter(modalities_arr[mask].tolist())),
        }
    naive = random_split(len(group_ids), fractions, seed)
    sizes = np.bincount(group_ids) if len(group_ids) else np.array([0])
    mixed = [
        int(g) for g in np.unique(group_ids)
        if len(set(labels[group_ids == g].tolist())) > 1
    ]
    return {
        "images": int(len(group_ids)),
        "groups": int(len(sizes[sizes > 0])),
        "largest_group": int(sizes.max()) if len(group_ids) else 0,
        "groups_with_duplicates": int((sizes > 1).sum()),
        "mixed_label_groups": mixed,
        "splits": per_split,
        "leak_in_this_split": {
            "val": leak_fraction(group_ids, splits, "val"),
            "test": leak_fraction(group_ids, splits, "test"),
        },
        "leak_if_random_split": {
            "val": leak_fraction(group_ids, naive, "val"),
            "test": leak_fraction(group_ids, naive, "test"),
        },
    }
