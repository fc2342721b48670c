"""The manifest: one row per image file found (usable or not) with its label,
modality, split, content hashes and duplicate group. Written as ``manifest.csv`` into
every run folder so a run says exactly what it trained, validated and tested on.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import secrets
import signal
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numpy as np

from engine.data import dedup, health, inspect_cache, scans, splits
from engine.data.imageio import ImageDecodeError, decode_rgb, decode_workers, read_file_bytes, read_scan
from engine.data.sources import SourceImage, discover, relocate
from engine.files import atomic_open


@dataclass
class ManifestRow:
    path: str
    label: int
    class_name: str
    modality: str
    split: str = ""
    usable: bool = True
    reason: str = ""
    width: int = 0
    height: int = 0
    sha256: str = ""
    phash: str = ""
    phash_mirror: str = ""
    group: int = -1
    fold: int = -1  # cross-validation fold (engine.cv); -1 outside CV and for test images
    original_label: int = -1  # the folder's label; ``label`` is the one after label review
    review: str = ""  # label review decision: "", keep, relabel or exclude (engine.evaluation.review)
    patient_key: str = ""  # salted hash of a scan file's patient/study (engine.data.scans), never the ID
    # Quality scores (engine.data.health.quality_scores); -1 = not measured (older manifests)
    grey_mean: float = -1.0
    grey_std: float = -1.0
    grey_p99: float = -1.0
    sharpness: float = -1.0

    @property
    def quality(self) -> dict[str, float]:
        return {"mean": self.grey_mean, "std": self.grey_std, "p99": self.grey_p99,
                "sharpness": self.sharpness}


FIELDS = [f.name for f in fields(ManifestRow)]
log = logging.getLogger("engine.manifest")
POOLS = ("auto", "threads", "processes")
# "auto" inspects in processes from this many files on: the hashes and scores are mostly
# Python-held NumPy work that threads serialise on the GIL (bench/scale.py --inspect, 2
# cores: Br35H 33.3 s in threads, 23.4 s in processes; 10,000 small slices 28.4 s vs 8.8 s).
PROCESSES_FROM = 256
PROGRESS_EVERY_SECONDS = 5.0
INSPECT_CHUNK = 32  # files per pool task; results are recorded (and reported) a chunk at a time


def _hashed(row: ManifestRow, rgb: np.ndarray, describe: bool = True) -> tuple[ManifestRow, np.ndarray | None]:
    """The row with its size, hashes and quality scores, and the image's contrast-
    invariant descriptor (kept in memory for grouping, not written; None when the data
    set is too large for the correlation test)."""
    row.height, row.width = int(rgb.shape[0]), int(rgb.shape[1])
    row.sha256 = dedup.pixel_digest(rgb)
    hashed, mirrored = dedup.perceptual_hashes(rgb)
    row.phash, row.phash_mirror = f"{hashed:016x}", f"{mirrored:016x}"
    health.set_quality(row, health.quality_scores(rgb))
    return row, dedup.contrast_descriptor(rgb) if describe else None


def _inspect(source: SourceImage, salt: bytes = b"", describe: bool = True) -> list[tuple[ManifestRow, np.ndarray | None]]:
    """The rows of one file: one for a picture or a single-frame DICOM, one per kept
    slice (``file#slice=K``) for a multi-frame DICOM or a NIfTI volume, or one
    unusable row with the reason."""
    row = ManifestRow(source.path, source.label, source.class_name, source.modality,
                      original_label=source.label)
    try:
        data = read_file_bytes(source.path)
        if not scans.is_scan(data):
            return [_hashed(row, decode_rgb(data), describe)]
        scan = read_scan(data, salt=salt, name=source.path)
    except ImageDecodeError as err:
        row.usable, row.reason = False, str(err)
        return [(row, None)]
    modality = scan.modality if scan.modality != "unknown" else source.modality
    return [_hashed(ManifestRow(address, source.label, source.class_name, modality,
                                original_label=source.label, patient_key=scan.group_key), rgb, describe)
            for address, _, rgb in scan.addressed(source.path)]


class ScanStopped(Exception):
    """A stop was asked for while the data were being inspected; what was inspected is in
    the inspection cache, so a resume continues quickly."""


def _ignore_stop_signals() -> None:
    """Initializer of the inspection processes: a Stop signals the run's whole process
    group, and a worker that died of it broke the pool (BrokenProcessPool, a failed
    run). The workers ignore it; the build checks the stop between chunks."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _inspect_chunk(chunk, salt: bytes, describe: bool):
    """_inspect over several sources: one task of the process pool (fewer round trips)."""
    return [_inspect(source, salt, describe) for source in chunk]


def inspect_sources(sources: list[SourceImage], describe: bool, *, workers: int | None = None,
                    pool: str = "auto", cache="default", progress=None, should_stop=None):
    """[(row, descriptor or None)] of every source in order, each file inspected once
    (or read back from the cache). Patient keys come out under the cache's salt (or a
    fresh one without a cache); build_manifest re-salts them. ``should_stop()`` is asked
    after every chunk; when it says so, ScanStopped is raised (the chunks done are kept
    in the cache)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}")
    store = None
    path = inspect_cache.default_path() if cache == "default" else cache
    if path:
        try:
            store = inspect_cache.InspectCache(path)
        except Exception as err:  # noqa: BLE001 - a broken cache must not stop a build
            log.warning("inspection cache %s unusable (%s); inspecting every file", path, err)
    salt = store.salt if store else secrets.token_bytes(16)
    results: list = [None] * len(sources)
    stamps = [inspect_cache.file_stamp(s.path) for s in sources]
    todo = []
    for index, source in enumerate(sources):
        found = store.get(source.path, stamps[index], describe) if store else None
        if found is None:
            todo.append(index)
            continue
        dicts, descriptors = found
        results[index] = [(ManifestRow(**d), None if descriptors is None else descriptors[k])
                          for k, d in enumerate(dicts)]
    total, done, started, last = len(sources), len(sources) - len(todo), time.time(), time.time()
    if store and done:
        log.info("inspection cache: %d of %d files unchanged since an earlier build; inspecting %d",
                 done, total, len(todo))
    chunk = INSPECT_CHUNK
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    cores = os.cpu_count() or 1
    processes = len(todo) > chunk and cores > 1 and (
        pool == "processes" or (pool == "auto" and len(todo) >= PROCESSES_FROM))
    if processes:
        # forkserver: workers fork from a clean server process, never from this one (which
        # may hold TensorFlow's threads, where a fork can deadlock).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["engine.data.manifest"])
        executor = ProcessPoolExecutor(max_workers=workers or cores, mp_context=context,
                                       initializer=_ignore_stop_signals)
    else:
        executor = ThreadPoolExecutor(max_workers=decode_workers(workers))
    try:
        with executor:
            # A Stop signals the whole process group. While the pool starts its server and
            # workers, the stop signals are blocked here (children inherit the mask, so
            # they never die of it) and delivered to this process right after.
            stop_signals = {signal.SIGTERM, signal.SIGINT}
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals) if processes else None
            try:
                outputs = executor.map(_inspect_chunk, ([sources[i] for i in c] for c in chunks),
                                       [salt] * len(chunks), [describe] * len(chunks))
            finally:
                if previous is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            for indices, found in zip(chunks, outputs):
                for index, items in zip(indices, found):
                    results[index] = items
                    if store:
                        descriptors = [d for _, d in items if d is not None]
                        store.put(sources[index].path, stamps[index], describe, [asdict(r) for r, _ in items],
                                  descriptors if len(descriptors) == len(items) and descriptors else None)
                done += len(indices)
                if progress:
                    progress(done, total)
                if should_stop and should_stop() and done < total:
                    executor.shutdown(wait=False, cancel_futures=True)
                    raise ScanStopped(f"stopped during data preparation after {done} of {total} files "
                                      "(kept in the inspection cache: Resume continues from there)")
                if time.time() - last >= PROGRESS_EVERY_SECONDS:
                    last = time.time()
                    rate = (done - (total - len(todo))) / max(last - started, 1e-9)
                    log.info("inspected %d of %d files (%.0f/s, about %.0f s left)", done, total, rate,
                             (total - done) / max(rate, 1e-9))
    finally:
        if store:
            store.close()
    return [item for items in results for item in items]


def build_manifest(
    data_dir: str | None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    dedup_distance: int = 4,
    workers: int | None = None,
    dedup_correlation: float = dedup.MIN_CORRELATION,
    pool: str = "auto",
    cache: "str | os.PathLike | None" = "default",
    progress=None,
    twins=None,
    should_stop=None,
    kept_split: "dict[str, tuple[str, int]] | None" = None,
    flips: bool = True,
) -> tuple[list[ManifestRow], dict]:
    """Scan, decode-check, hash, group and split a data folder.

    Inspection (decode, hashes, quality scores) runs in ``pool`` ("threads",
    "processes", or "auto": processes from PROCESSES_FROM files on) and is recorded per file in
    ``cache`` (engine.data.inspect_cache; "default" = its default file, None = off), so
    a killed build resumes and a changed folder re-inspects only what changed.
    ``progress(done, total)`` is called as files are inspected; ``should_stop()`` is
    asked between chunks (ScanStopped when it says so). ``twins(usable_rows)``,
    if given, returns ([P, 2] index pairs into those rows, a description) of relatives
    found by a test outside this stage (a model's features: engine.training.twins), merged
    into the duplicate groups before the split. ``kept_split`` (``read_placements`` of
    an earlier manifest) freezes that manifest's test split: its images stay in or out of
    test, and a group merged across it moves whole to where most of its images were
    (engine.data.splits.keep_placements).

    Returns (rows, summary). Unusable files stay in the manifest with their reason
    and no split. Raises DataLayoutError for fatal problems, and ValueError when too
    few usable images remain to split.
    """
    sources, layout = discover(data_dir)
    salt = secrets.token_bytes(16)  # per manifest: keys group files, never link runs
    # The descriptors are held in memory (16 KB an image): above their limit none is
    # computed, and grouping uses the exact and pHash tests.
    describe = dedup_correlation > 0 and dedup_distance >= 0 and len(sources) <= dedup.MAX_DESCRIBED_IMAGES
    if dedup_correlation > 0 and dedup_distance >= 0 and not describe:
        dedup.log.warning("%d files: the contrast-invariant duplicate test is skipped above %d images "
                          "(its descriptors would not fit in memory); exact and pHash grouping still apply",
                          len(sources), dedup.MAX_DESCRIBED_IMAGES)
    inspected = inspect_sources(sources, describe, workers=workers, pool=pool, cache=cache,
                                progress=progress, should_stop=should_stop)
    for row, _ in inspected:  # keys group files within this manifest only
        row.patient_key = inspect_cache.resalt(row.patient_key, salt)
    rows = [row for row, _ in inspected]
    usable = [row for row in rows if row.usable]
    descriptors = (np.stack([d for row, d in inspected if row.usable])
                   if usable and describe and len(usable) <= dedup.MAX_DESCRIBED_IMAGES else None)
    if len(usable) < 3 or len({row.label for row in usable}) < 2:
        raise ValueError(
            f"only {len(usable)} usable images ({len(rows) - len(usable)} could not be read): "
            "at least one image of each class is needed"
        )
    twin_pairs, twin_summary = twins(usable) if twins else (None, None)
    group_ids = dedup.group_duplicates(
        [row.sha256 for row in usable],
        [int(row.phash, 16) for row in usable],
        [int(row.phash_mirror, 16) for row in usable],
        dedup_distance,
        same_source=[row.patient_key for row in usable],
        descriptors=descriptors, min_correlation=dedup_correlation if dedup_distance >= 0 else 0.0,
        extra_pairs=twin_pairs, flips=dedup.FLIPS if flips else dedup.MIRROR_ONLY,
    )
    labels = np.array([row.label for row in usable])
    modalities = [row.modality for row in usable]
    assignment = splits.split_groups(group_ids, labels, modalities, fractions, seed)
    kept_summary = None
    if kept_split is not None:
        assignment, kept_summary = keep_test_split(usable, group_ids, assignment, kept_split)
    for row, group, split in zip(usable, group_ids.tolist(), assignment.tolist()):
        row.group, row.split = int(group), split
    summary = splits.split_summary(group_ids, labels, modalities, assignment, fractions, seed)
    summary.update({
        "layout": layout,
        "data_dir": str(data_dir or "default:br35h"),
        "files_found": len(rows),
        "files_skipped": len(rows) - len(usable),
        "skipped_reasons": _count_reasons(rows),
        "dedup_distance": dedup_distance,
        "dedup_correlation": dedup_correlation,
        "dedup_flips": list(dedup.FLIPS if flips else dedup.MIRROR_ONLY),
        "contrast_test": contrast_test_record(dedup_correlation, dedup_distance, len(usable), descriptors is not None),
    })
    if twin_summary:
        summary["twins"] = twin_summary
    if kept_summary:
        summary["kept_split"] = kept_summary
    if any(row.patient_key for row in usable):
        # Patients (or volumes) per split: each key lies in exactly one split.
        summary["patients"] = {split: len({r.patient_key for r in usable if r.split == split and r.patient_key})
                               for split in ("train", "val", "test")}
    return rows, summary


def read_placements(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{path: (split, fold)} of every usable image of a manifest (paths relocated as
    read_manifest does): what ``kept_split`` and a CV's kept folds hold fixed."""
    return {row.path: (row.split, row.fold) for row in read_manifest(path) if row.usable and row.split}


def keep_test_split(usable, group_ids, assignment, kept_split) -> tuple[np.ndarray, dict]:
    """``assignment`` with an earlier manifest's test split frozen: every image it held
    stays in or out of test, a group merged across its test split goes whole to the side
    that held most of its images (ties: out of test), images it did not hold stay where
    they were dealt. An image leaving test goes to train. Returns (assignment, counts)."""
    earlier = [(kept_split[row.path][0] == "test") if row.path in kept_split else None for row in usable]
    dealt_test = assignment == "test"
    in_test = splits.keep_placements(group_ids, dealt_test, earlier).astype(bool)
    result = np.where(in_test, "test", np.where(dealt_test, "train", assignment)).astype(str)
    moved_in = [row.path for row, was, now in zip(usable, earlier, in_test) if was is False and now]
    moved_out = [row.path for row, was, now in zip(usable, earlier, in_test) if was is True and not now]
    for direction, paths in (("into", moved_in), ("out of", moved_out)):
        for path in paths:
            log.info("kept split: %s moves %s the test split with its duplicate group", path, direction)
    return result, {"matched_images": sum(e is not None for e in earlier),
                    "moved_into_test": moved_in, "moved_out_of_test": moved_out}


def contrast_test_record(correlation: float, distance: int, images: int, described: bool) -> dict:
    """How contrast-changed copies were looked for, in words the Data page shows: a
    skipped test must be visible to whoever did not read the log."""
    if correlation <= 0 or distance < 0:
        return {"method": "off", "note": "the contrast-invariant duplicate test was turned off"}
    if not described:
        return {"method": "skipped", "note": f"{images:,} images: above {dedup.MAX_DESCRIBED_IMAGES:,} the "
                "contrast-invariant test is skipped (its descriptors would not fit in memory), so copies "
                "that differ only in contrast or gamma may sit on both sides of the split"}
    if images > dedup.MAX_CORRELATION_IMAGES:
        return {"method": "indexed", "note": "contrast-changed copies found through an approximate index "
                "(faiss HNSW), every pair verified with the exact correlation"}
    return {"method": "exact", "note": "contrast-changed copies found by comparing every pair of images"}


def _count_reasons(rows: list[ManifestRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        if not row.usable:
            key = row.reason.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def write_manifest(rows: list[ManifestRow], path: str | os.PathLike) -> None:
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        result = []
        for record in reader:
            result.append(ManifestRow(
                path=relocate(record["path"]), label=int(record["label"]), class_name=record["class_name"],
                modality=record["modality"], split=record["split"],
                usable=record["usable"] == "True", reason=record["reason"],
                width=int(record["width"] or 0), height=int(record["height"] or 0),
                sha256=record["sha256"], phash=record["phash"],
                phash_mirror=record["phash_mirror"], group=int(record["group"]),
                fold=int(record.get("fold") or -1),
                original_label=int(record.get("original_label") or record["label"]),
                review=record.get("review") or "",
                patient_key=record.get("patient_key") or "",
                **{name: float(record.get(name) or -1.0)
                   for name in ("grey_mean", "grey_std", "grey_p99", "sharpness")},
            ))
        return result


def rows_for_split(rows: list[ManifestRow], split: str) -> list[ManifestRow]:
    """Every usable image of a split, label-review exclusions included (evaluation)."""
    return [row for row in rows if row.usable and row.split == split]


def rows_for_training(rows: list[ManifestRow], split: str) -> list[ManifestRow]:
    """The images a training run learns from and monitors: usable, in the split, and
    not excluded by a label review."""
    return [row for row in rows if row.usable and row.split == split and row.review != "exclude"]
