"""Console and file logging for a training run: the log file in the run folder, a
line per epoch on the console, and an in-place progress bar only on a terminal."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from engine import layout


def setup_logging(folder: Path) -> None:
    root = logging.getLogger("engine")
    root.setLevel(logging.INFO)
    root.propagate = False  # TensorFlow's absl handler would print every line twice
    for handler in list(root.handlers):
        if getattr(handler, "_engine_run", False):
            root.removeHandler(handler)
    file_handler = logging.FileHandler(folder / layout.TRAIN_LOG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    file_handler._engine_run = True
    root.addHandler(file_handler)
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_engine_console", False)
               for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        console._engine_console = True
        root.addHandler(console)


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_bar(epoch: int, epochs: int, done: int, total: int, loss: float, rate: float) -> None:
    """An in-place progress bar, only on a terminal (logs stay clean)."""
    if not sys.stderr.isatty():
        return
    width = 28
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\repoch {epoch}/{epochs} [{bar}] {done}/{total} loss {loss:.4f} {rate:.0f} img/s ")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def format_metric(value) -> str:
    """A metric for the log: four decimals, or n/a."""
    return "n/a" if value is None else f"{value:.4f}"
