"""Decoded images on disk: data sets larger than memory, decoded once, reused by runs.

A cache is one uint8 array ``[N, S, S, 3]`` in NumPy's .npy format, read through a
memory map: the operating system keeps the pages it has room for and reads the rest
from disk, so a worker's memory no longer grows with the data set (500,000 slices at
224 px are 75 GB decoded). A training batch reads its rows in one fancy-indexed copy.

The file is named by a key of what it holds: the files (path, size, modification
time, in order), the image size and the head crop. Another run on the same manifest
and size (or the next fold of a CV on the same shard) finds it and decodes nothing; a
changed file changes the key. It is written under a temporary name and renamed when
complete, under a file lock, so a killed build leaves no half cache that looks whole,
and two processes never build the same one twice. No TensorFlow here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.data.imageio import ImageDecodeError, decode_path, decode_workers, prepare_rgb

log = logging.getLogger("engine.cache")

FORMAT_VERSION = 1
# "auto" keeps decoded images in memory while they take at most this share of the
# memory available when the run starts, and on disk above it.
MEMORY_SHARE = 0.25


def _file_stamp(path: str) -> tuple[str, int, int]:
    file = path.split("#", 1)[0]  # a slice address names its file (engine.data.scans)
    try:
        stat = os.stat(file)
        return path, stat.st_size, stat.st_mtime_ns
    except OSError:
        return path, -1, -1


def cache_key(paths: list[str], image_size: int, crop_to_head: bool) -> str:
    """What a cache holds, as a short hex digest (pure apart from stat)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT_VERSION, int(image_size), bool(crop_to_head)]).encode())
    for stamp in map(_file_stamp, paths):
        digest.update(json.dumps(stamp).encode())
    return digest.hexdigest()[:24]


def decoded_bytes(count: int, image_size: int) -> int:
    return int(count) * int(image_size) * int(image_size) * 3


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or total memory where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_cache(requested: str, count: int, image_size: int, memory: int | None = None) -> tuple[str, str]:
    """(cache kind, the reason in words) for ``requested`` ("auto", "memory", "disk",
    "none"; "file" is the old name of "disk"). Pure given ``memory``."""
    if requested == "file":
        return "disk", "cache=file (the old name of disk)"
    if requested != "auto":
        return requested, f"cache={requested} as asked"
    need = decoded_bytes(count, image_size)
    memory = available_memory() if memory is None else memory
    if need <= MEMORY_SHARE * memory:
        return "memory", (f"decoded images take {need / 2**30:.2f} GB, within {MEMORY_SHARE:.0%} of "
                          f"the {memory / 2**30:.1f} GB available: kept in memory")
    return "disk", (f"decoded images would take {need / 2**30:.1f} GB, over {MEMORY_SHARE:.0%} of the "
                    f"{memory / 2**30:.1f} GB available: cached on disk instead")


def build(paths: list[str], image_size: int, crop_to_head: bool, folder: str | os.PathLike,
          workers: int | None = None) -> Path:
    """The cache file of these images, decoded now unless a run already did. A file
    that cannot be decoded any more becomes a black image (the manifest had kept it),
    counted in the log."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{cache_key(paths, image_size, crop_to_head)}.npy"
    with open(folder / (target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it built
        if target.exists():
            log.info("decoded-image cache %s: reused (%d images)", target, len(paths))
            return target
        for stale in folder.glob(target.name + ".partial-*"):
            stale.unlink(missing_ok=True)  # a killed build's; the lock says no one else is writing
        started = time.time()
        partial = folder / f"{target.name}.partial-{os.getpid()}"
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8,
                                          shape=(len(paths), image_size, image_size, 3))

        def one(index: int) -> bool:
            try:
                array[index] = prepare_rgb(decode_path(paths[index]), image_size, crop_to_head)
                return True
            except ImageDecodeError:
                return False  # stays black (the file was readable when the manifest was built)

        with ThreadPoolExecutor(decode_workers(workers)) as pool:
            failed = sum(not ok for ok in pool.map(one, range(len(paths)), chunksize=64))
        array.flush()
        os.replace(partial, target)
        log.info("decoded-image cache %s: %d images (%.2f GB) in %.1f s%s", target, len(paths),
                 decoded_bytes(len(paths), image_size) / 2**30, time.time() - started,
                 f"; {failed} could not be decoded and are black" if failed else "")
        return target


def open_cache(path: str | os.PathLike) -> np.ndarray:
    """The cache as a read-only memory map."""
    return np.load(path, mmap_mode="r")
