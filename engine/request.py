"""The run request: what a run, a fold job or a cross-validation is asked to do, as one
typed value with one reader and one writer. The dashboard's form, every ``python -m
engine.<verb>``, the launcher, resume and the exporter build or read a ``RunRequest``;
none of them reads or writes the ``config.json`` dictionary itself.

``config.json`` holds the request (``config`` and, for a CV, ``cv``) and, once training
has started, the run's record of what it derived from it (``derived``: steps, global
batch, parameters; ``environment``: devices, versions). The record is written beside
the request, never mixed into it. No TensorFlow here: the dashboard imports it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine import layout
from engine.config import TrainConfig
from engine.files import write_json_atomic

RECORD_SECTIONS = ("derived", "environment")


class RequestError(ValueError):
    """A run request that cannot be read or cannot start (the message says why)."""


@dataclass(frozen=True)
class CrossValidation:
    """The shape of a K-fold cross-validation on grouped folds."""
    folds: int = 5
    evaluate_test: bool = True  # False: leave the test split unseen (compare recipes on the folds)

    def __post_init__(self):
        if int(self.folds) < 2:
            raise RequestError("a cross-validation needs at least 2 folds")


@dataclass(frozen=True)
class RunRequest:
    """A run's whole request. ``config.workers`` sets the local worker processes.

    A cross-validation always exports each fold's last epoch (``best_metric="last"``):
    a fold's val split is the fold being scored and must choose nothing. That rule is
    applied here, once, whoever builds the request."""
    config: TrainConfig
    cv: CrossValidation | None = None

    def __post_init__(self):
        if self.cv is not None and self.config.best_metric != "last":
            object.__setattr__(self, "config", self.config.replace(best_metric="last"))

    @property
    def is_cv(self) -> bool:
        return self.cv is not None

    @property
    def workers(self) -> int:
        return int(self.config.workers)

    def replace(self, **config_changes) -> "RunRequest":
        """The same request with config fields changed (``epochs=30`` to extend a run)."""
        return dataclasses.replace(self, config=self.config.replace(**config_changes))

    def to_dict(self) -> dict:
        """The request as stored (tuples as lists), so a stored request compares equal to
        a fresh one."""
        payload = {"config": self.config.to_dict()}
        if self.cv is not None:
            payload["cv"] = {"folds": int(self.cv.folds), "evaluate_test": bool(self.cv.evaluate_test)}
        return json.loads(json.dumps(payload))

    @classmethod
    def from_dict(cls, payload: dict) -> "RunRequest":
        """Read a stored request, or a bare dictionary of config fields (a hand-written
        ``--config`` file). Runs written before ``workers`` was part of the config
        recorded it under "environment"; that is honoured."""
        if not isinstance(payload, dict) or not payload or (
                "config" not in payload and ({"cv", *RECORD_SECTIONS} & set(payload))):
            raise RequestError('a run request needs a "config" section')
        values = dict(payload["config"] if isinstance(payload.get("config"), dict)
                      else {k: v for k, v in payload.items() if k not in ("cv", *RECORD_SECTIONS)})
        if "workers" not in values:
            values["workers"] = int((payload.get("environment") or {}).get("workers") or 1)
        try:
            config = TrainConfig.from_dict(values)
        except (TypeError, ValueError) as err:
            raise RequestError(f"the run request's config is not valid: {err}") from None
        cv = payload.get("cv")
        if cv is not None:
            cv = CrossValidation(int(cv["folds"]), bool(cv.get("evaluate_test", True)))
        return cls(config, cv)

    @classmethod
    def read(cls, where: str | os.PathLike) -> "RunRequest":
        """The request of a run folder, or of a config.json file given by its path."""
        path = Path(where)
        if path.is_dir():
            path = path / layout.CONFIG
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise RequestError(f"{path.parent} has no run request ({layout.CONFIG})") from None
        except (OSError, ValueError) as err:
            raise RequestError(f"{path} cannot be read as a run request: {err}") from None
        return cls.from_dict(payload)

    def write(self, folder: str | os.PathLike, **record) -> Path:
        """Write the request as ``folder``/config.json (atomically). ``record`` adds or
        replaces the run's record sections (``derived``, ``environment``); the ones
        already in the file are kept, so a resumed run keeps what it recorded."""
        unknown = set(record) - set(RECORD_SECTIONS)
        if unknown:
            raise ValueError(f"not a record section: {sorted(unknown)}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / layout.CONFIG
        payload = self.to_dict()
        old = read_record(folder)
        payload.update({k: v for k, v in old.items() if v is not None})
        payload.update({k: v for k, v in record.items() if v is not None})
        write_json_atomic(path, payload)
        return path


def read_record(folder: str | os.PathLike) -> dict:
    """The record sections (``derived``, ``environment``) a run wrote beside its request."""
    try:
        payload = json.loads((Path(folder) / layout.CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return {k: payload[k] for k in RECORD_SECTIONS if isinstance(payload, dict) and k in payload}


def planned_folds(folder: str | os.PathLike) -> int:
    """The number of folds a CV folder's request asks for (0 for a run or no request)."""
    request = stored_request(folder)
    return request.cv.folds if request is not None and request.is_cv else 0


def stored_request(folder: str | os.PathLike) -> RunRequest | None:
    """The folder's request, or None when it has none (or an unreadable one)."""
    try:
        return RunRequest.read(folder)
    except RequestError:
        return None
