"""The Keras reference, side by side with the engine on the same cross-validation folds.

    python bench/keras_cv.py runs/<cv_dir>                  # the plain Keras reference
    python bench/keras_cv.py runs/<cv_dir> --recipe same    # Keras with the engine's whole recipe

For every fold of an engine.cv folder, trains ``bench/keras_reference.py``'s network of
the same architecture with Keras ``model.fit`` on the same training images with the same
epoch budget, batch size and learning rate with warm-up + cosine decay. Two recipes:

- ``plain`` (default): what a user would write instead of this project: images decoded and
  resized (no crop to the head), Keras augmentation layers (flip, rotation, zoom), Adam,
  binary cross-entropy, no label smoothing, dropout, weight decay or test-time averaging.
  This is the reference the engine's recipe must beat.
- ``same``: the engine's recipe replicated (the engine's own tf.data pipeline with crop and
  augmentation, AdamW with its weight decay, label smoothing, head dropout, flip
  test-time averaging), so only the model code and the training loop differ: a
  diagnostic of the implementation, not a user's alternative.

Keras's seeds follow the CV's training seed (``--init-seed`` of engine.cv, else
``--seed``), so a seed rerun of the engine gets a seed rerun of the reference.

Both sets of out-of-fold predictions are scored the same way (engine.training.cv.fold_summary:
per-fold threshold and temperature fitted on the other folds); the script prints both CV
means ± std and the ratio of out-of-fold errors (engine / Keras), and writes
``keras_<recipe>_oof_predictions.csv`` and ``keras_comparison[_same].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
from keras import layers  # noqa: E402

from bench.keras_reference import keras_resnet  # noqa: E402
from engine.request import RunRequest  # noqa: E402
from engine.data import pipeline  # noqa: E402
from engine import layout  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from engine.evaluation.oof import fold_summary, out_of_fold_errors, read_oof  # noqa: E402
from engine.data.manifest import read_manifest  # noqa: E402


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then cosine decay to 0, as engine.training.optim.learning_rate_at."""

    def __init__(self, base, warmup, total):
        self.base, self.warmup, self.total = base, float(warmup), float(max(total, 1))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base * (step + 1.0) / max(self.warmup, 1.0)
        progress = tf.clip_by_value((step - self.warmup) / max(self.total - self.warmup, 1.0), 0.0, 1.0)
        cosine = 0.5 * self.base * (1.0 + tf.cos(np.pi * progress))
        return tf.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return {"base": self.base, "warmup": self.warmup, "total": self.total}


def keras_model(config: TrainConfig, dropout: float) -> keras.Model:
    base = keras_resnet(config.preset, config.width, (), config.image_size)
    x = base.layers[-2].output  # global average pool, before the reference's own head
    for units in config.head_units:
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return keras.Model(base.input, layers.Dense(1)(x))


def plain_training_data(config: TrainConfig, train_rows, steps: int) -> tf.data.Dataset:
    """Decode and resize (no head crop), shuffle, batch, Keras augmentation layers."""
    augment = keras.Sequential([layers.RandomFlip("horizontal"),
                                layers.RandomRotation(config.rotation_degrees / 360.0, fill_mode="constant"),
                                layers.RandomZoom(config.zoom, fill_mode="constant")])
    decoded = pipeline.decoded_dataset([r.path for r in train_rows], [r.label for r in train_rows],
                                       config.image_size, crop_to_head=False)
    data = (decoded.shuffle(len(train_rows), seed=config.training_seed, reshuffle_each_iteration=True)
            .repeat().batch(config.batch_size, drop_remainder=True)
            .map(lambda x, y: (augment(tf.cast(x, tf.float32) / 255.0, training=True), y),
                 num_parallel_calls=tf.data.AUTOTUNE))
    return data.take(steps * config.epochs).prefetch(tf.data.AUTOTUNE)


def same_training_data(config: TrainConfig, train_rows) -> tf.data.Dataset:
    """The engine's own pipeline (crop, augmentation, per-epoch seeds)."""
    decoded = pipeline.decoded_dataset([r.path for r in train_rows], [r.label for r in train_rows],
                                       config.image_size, crop_to_head=config.crop_to_head)
    epochs = [pipeline.train_dataset(decoded, len(train_rows), config.batch_size, config,
                                     seed=config.training_seed * 10_007 + e) for e in range(config.epochs)]
    data = epochs[0]
    for later in epochs[1:]:
        data = data.concatenate(later)  # each epoch its own shuffle and augmentation seed
    return data


def train_fold(config: TrainConfig, train_rows, val_rows, seed: int,
               recipe: str = "plain") -> tuple[np.ndarray, float]:
    """Out-of-fold logits for ``val_rows`` and the training seconds."""
    keras.utils.set_random_seed(seed)
    steps = pipeline.steps_for(len(train_rows), config.batch_size, drop_remainder=True)
    same = recipe == "same"
    data = same_training_data(config, train_rows) if same else plain_training_data(config, train_rows, steps)
    model = keras_model(config, config.dropout if same else 0.0)
    schedule = WarmupCosine(config.learning_rate, round(config.warmup_epochs * steps),
                            steps * config.epochs)
    optimizer = (keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay) if same
                 else keras.optimizers.Adam(schedule))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.BinaryCrossentropy(
                      from_logits=True, label_smoothing=config.label_smoothing if same else 0.0),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    started = time.time()
    model.fit(data, epochs=config.epochs, steps_per_epoch=steps, verbose=0)
    seconds = time.time() - started
    val = pipeline.decoded_dataset([r.path for r in val_rows], [r.label for r in val_rows],
                                   config.image_size, cache="none",
                                   crop_to_head=config.crop_to_head and same)
    logits = []
    for images, _ in pipeline.eval_dataset(val, 64):
        plain = model(images, training=False)[:, 0]
        if config.flip_tta and same:
            plain = (plain + model(tf.reverse(images, axis=[2]), training=False)[:, 0]) / 2.0
        logits.append(plain.numpy())
    return np.concatenate(logits), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dir")
    parser.add_argument("--folds", help="comma-separated fold numbers (default: all)")
    parser.add_argument("--recipe", choices=["plain", "same"], default="plain")
    parser.add_argument("--keras-oof", metavar="CSV",
                        help="score against Keras out-of-fold predictions saved by an earlier run "
                        "of this script on the same folds, instead of training Keras again")
    args = parser.parse_args(argv)
    cv_dir = Path(args.cv_dir)
    request = RunRequest.read(cv_dir)
    config, folds = request.config, request.cv.folds
    chosen = [int(f) for f in args.folds.split(",")] if args.folds else list(range(folds))
    rows = [r for r in read_manifest(cv_dir / layout.MANIFEST) if r.usable and r.split != "test"]
    engine_oof = {r["path"]: float(r["logit"]) for r in read_oof(cv_dir / layout.OOF_PREDICTIONS)}
    keras_logits = np.full(len(rows), np.nan)
    seconds = []
    if args.keras_oof:
        from engine.evaluation.oof_compare import read_source
        saved = read_source(args.keras_oof)  # path -> {label, logit, fold, group}
        if any(saved.get(r.path, {"fold": r.fold})["fold"] != r.fold for r in rows):
            raise SystemExit("the saved Keras predictions come from different folds")
        keras_logits = np.array([saved.get(r.path, {"logit": np.nan})["logit"] for r in rows])
        chosen = []
    for fold in chosen:
        index = [i for i, r in enumerate(rows) if r.fold == fold]
        train = [r for r in rows if r.fold != fold]
        logits, took = train_fold(config, train, [rows[i] for i in index], config.training_seed + fold,
                                  args.recipe)
        keras_logits[index] = logits
        seconds.append(took)
        print(f"fold {fold}: Keras model.fit trained in {took:.0f} s", flush=True)
    mask = ~np.isnan(keras_logits)
    labels = np.array([r.label for r in rows])[mask]
    fold_of = np.array([r.fold for r in rows])[mask]
    # Fold numbers renumbered 0..n-1 for fold_summary when a subset was run.
    renumber = {f: i for i, f in enumerate(sorted(set(fold_of.tolist())))}
    fold_of = np.array([renumber[f] for f in fold_of])
    engine_logits = np.array([engine_oof[r.path] for r in rows])[mask]
    summaries = {name: fold_summary(labels, logits, fold_of, len(renumber))
                 for name, logits in (("engine", engine_logits), ("keras", keras_logits[mask]))}
    results = {name: {"mean": summary["mean"], "std": summary["std"],
                      "oof_errors": out_of_fold_errors(summary),
                      "pooled_oof_roc_auc": summary["pooled_oof_roc_auc"]}
               for name, summary in summaries.items()}
    ratio = results["engine"]["oof_errors"] / max(results["keras"]["oof_errors"], 1)
    if args.keras_oof:
        print(f"engine {cv_dir.name} vs saved Keras predictions {args.keras_oof}")
        print_table(summaries)
        print(f"engine / Keras out-of-fold errors: {ratio:.2f}")
        return 0
    with open(cv_dir / f"keras_{args.recipe}_oof_predictions.csv", "w") as handle:
        handle.write("path,label,logit,fold\n")
        for r, z in zip(np.array(rows, dtype=object)[mask], keras_logits[mask]):
            handle.write(f"{r.path},{r.label},{z:.6f},{r.fold}\n")
    print(f"\nKeras recipe: {args.recipe}; "
          f"{len(chosen)} folds, {int(mask.sum())} out-of-fold images, {config.epochs} epochs, "
          f"{config.image_size} px, {config.preset} x{config.width}, crop_to_head={config.crop_to_head}")
    print_table(summaries)
    print(f"engine / Keras out-of-fold errors: {ratio:.2f}; Keras training {np.mean(seconds):.0f} s per fold")
    name = layout.KERAS_COMPARISON if args.recipe == "plain" else "keras_comparison_same.json"
    (cv_dir / name).write_text(json.dumps(
        {**results, "error_ratio": ratio, "folds": chosen, "recipe": args.recipe,
         "keras_seconds_per_fold": seconds}, indent=2))
    return 0


def print_table(summaries: dict) -> None:
    """The engine's and Keras's rows, as bench/oof_compare.py prints every source."""
    from bench.oof_compare import TABLE_HEADER, row
    print(TABLE_HEADER)
    for name, summary in summaries.items():
        print(row(name, summary))


if __name__ == "__main__":
    sys.exit(main())
