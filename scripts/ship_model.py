"""Copy a finished run's model into checkpoints/ (the shipped model) with everything
its model card and the CI check need, and record the CI sample's accuracy.

    python scripts/ship_model.py runs/<run_id>
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILES = ["model.json", "config.json", "manifest.csv", "data_summary.json", "eval_val.json",
         "eval_test.json", "predictions_val.csv", "predictions_test.csv"]
CI_SAMPLE = 250


def main(run: str) -> None:
    from engine.evaluate import evaluate
    from engine.runs import read_metrics, read_status
    source = Path(run)
    if read_status(source).get("state") != "finished":
        sys.exit(f"{source} has not finished")
    target = ROOT / "checkpoints"
    target.mkdir(exist_ok=True)
    if (target / "export").exists():
        shutil.rmtree(target / "export")
    shutil.copytree(source / "export", target / "export")
    for name in FILES:
        shutil.copy2(source / name, target / name)
    info = json.loads((target / "model.json").read_text())
    info["checkpoint"] = f"trained in run {source.name}"
    (target / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    sample = evaluate(target, "test", out_dir=ROOT / "runs" / "_ci_sample", limit=CI_SAMPLE)
    full = json.loads((target / "eval_test.json").read_text())
    epochs = read_metrics(source, "epoch")
    status = read_status(source)
    card = {
        "run": source.name, "ci_sample_size": CI_SAMPLE, "ci_sample_accuracy": sample["accuracy"],
        "test_accuracy": full["accuracy"], "test_roc_auc": full["roc_auc"],
        "test_sensitivity": full["sensitivity"], "test_specificity": full["specificity"],
        "test_count": full["count"], "epochs": len(epochs),
        "training_seconds": status["ended"] - status["started"],
    }
    (target / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
