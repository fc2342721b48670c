"""A resumable record of inspected files, so a large data folder is decoded and hashed
once: a killed manifest build resumes where it stopped, and a folder that changed since
the last build re-inspects only the files that changed.

One SQLite file (standard library, safe for several processes) maps a file, by its
path, size and modification time, to the rows its inspection gave (engine.data.manifest:
hashes, size, quality scores, slice addresses) and its contrast descriptors. Rows are
committed in batches as they are made: that is the streaming to disk, and what a
resumed build reads back.

Patient keys: a manifest salts them afresh (keys group files within one manifest and
never link two runs). The cache stores each key under a salt of its own, kept in the
cache, and a build re-salts it with the manifest's salt; no identifier is ever stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from pathlib import Path

import numpy as np

from engine.data import dedup
from engine.runs import DEFAULT_RUNS_ROOT

# Bump when what an inspection computes changes (hashes, scores, slice selection):
# older records are then ignored, not misread.
INSPECT_VERSION = 4
COMMIT_EVERY = 256


def default_path() -> Path | None:
    """``BRAIN_MANIFEST_CACHE`` (a file; "off" disables the cache), else
    runs/.manifest_cache.sqlite."""
    setting = os.environ.get("BRAIN_MANIFEST_CACHE", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    if setting:
        return Path(setting)
    return Path(DEFAULT_RUNS_ROOT) / ".manifest_cache.sqlite"


def file_stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def resalt(key: str, salt: bytes) -> str:
    """A patient key under the manifest's salt (20 hex digits, like scans.salted_key)."""
    return hashlib.sha256(salt + key.encode()).hexdigest()[:20] if key else ""


class InspectCache:
    """``get(path, stamp, describe)`` -> (rows as dicts, descriptors or None) or None;
    ``put(...)`` records one file; ``flush()`` commits."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=120, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS inspected (path TEXT, size INTEGER, mtime INTEGER, "
                        "version INTEGER, described INTEGER, rows TEXT, descriptors BLOB, "
                        "PRIMARY KEY (path, version, described))")
        found = self.db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
        if found is None:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (secrets.token_bytes(16),))
            self.db.commit()
            found = self.db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
        self.salt = bytes(found[0])  # the salt of the keys stored here
        self.pending = 0
        self.hits = 0
        self.misses = 0

    def get(self, path: str, stamp, describe: bool):
        if stamp is None:
            return None
        found = self.db.execute(
            "SELECT size, mtime, rows, descriptors FROM inspected WHERE path = ? AND version = ? AND described = ?",
            (path, INSPECT_VERSION, int(describe))).fetchone()
        if found is None or (found[0], found[1]) != tuple(stamp):
            self.misses += 1
            return None
        self.hits += 1
        rows = json.loads(found[2])
        descriptors = None
        if found[3] is not None:
            descriptors = np.frombuffer(found[3], np.float16).reshape(len(rows), dedup.VIEWS, -1)
        return rows, descriptors

    def put(self, path: str, stamp, describe: bool, rows: list[dict], descriptors) -> None:
        if stamp is None:
            return
        blob = None
        if descriptors is not None and len(descriptors):
            blob = np.ascontiguousarray(np.stack(descriptors), np.float16).tobytes()
        self.db.execute("INSERT OR REPLACE INTO inspected VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (path, stamp[0], stamp[1], INSPECT_VERSION, int(describe), json.dumps(rows), blob))
        self.pending += 1
        if self.pending >= COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        self.db.commit()
        self.pending = 0

    def close(self) -> None:
        self.flush()
        self.db.close()
