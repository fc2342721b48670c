"""Metric names shared by the engine (which writes them) and the UI (which reads them).

Defined once so a rename cannot silently break a chart. No TensorFlow here.
"""

TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
TRAIN_AUC = "train/auc"
TRAIN_SENSITIVITY = "train/sensitivity"
TRAIN_SPECIFICITY = "train/specificity"

VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
VAL_AUC = "val/auc"
VAL_SENSITIVITY = "val/sensitivity"
VAL_SPECIFICITY = "val/specificity"

LEARNING_RATE = "lr"
IMAGES_PER_SECOND = "images_per_second"
EPOCH_SECONDS = "epoch_seconds"
ETA_SECONDS = "eta_seconds"

# Record kinds in metrics.jsonl.
KIND_STEP = "step"
KIND_EPOCH = "epoch"



def split_metric(split: str, name: str) -> str:
    """``split_metric("val", "auc") -> "val/auc"``."""
    return f"{split}/{name}"
