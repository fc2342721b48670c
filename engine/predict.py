"""``python -m engine.predict FILE...``: tumor probability and predicted class per
image, for the shipped model or a chosen run. Pictures (JPEG, PNG, BMP, TIFF, GIF,
WebP), DICOM (one line per frame of a multi-frame file) and NIfTI volumes (one line
per kept axial slice). Unreadable files get a message and a non-zero exit; the other
images are still predicted. Patient identifiers in DICOM files are never printed."""

from __future__ import annotations

import argparse
import json
import sys

from engine.data.imageio import ImageDecodeError, read_file_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.predict", description=__doc__)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, TIFF, GIF, WebP), DICOM files or NIfTI volumes")
    parser.add_argument("--model", default="", help="model folder: a finished run folder or "
                        "checkpoints/ (default: the shipped model)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument("--neighbours", type=int, default=0, metavar="K",
                        help="also list the K most similar images the model learnt from, and "
                        "whether the input is a near-copy of one (seen_in_training)")
    args = parser.parse_args(argv)

    from engine.serving.inference import ModelNotFoundError, load_model, predict_files
    try:
        model = load_model(args.model or None)
    except ModelNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    items, errors = [], {}
    for path in args.images:
        try:
            items.append((path, read_file_bytes(path)))
        except ImageDecodeError as err:
            errors[path] = str(err)
            items.append((path, b""))
    if args.neighbours and model.neighbours is None:
        print(f"error: {model.directory} stores no training features (neighbours.npz); "
              "--neighbours needs a model exported by this version", file=sys.stderr)
        return 2
    results = predict_files(model, items, neighbours=args.neighbours)
    failed = 0
    for result in results:
        error = errors.get(result.name) or result.error
        if error:
            failed += 1
            record = {"path": result.name, "error": error}
            print(json.dumps(record) if args.json else f"{result.name}: error: {error}",
                  file=sys.stdout if args.json else sys.stderr)
            continue
        record = {"path": result.name, "slice": result.slice_index,
                  "identifiers_withheld": result.identifiers_withheld,
                  "probability": round(result.probability, 6),
                  "uncertainty": (None if result.uncertainty is None
                                  else round(result.uncertainty, 6)),
                  "out_of_distribution": result.out_of_distribution,
                  "ood_score": None if result.ood_score is None else round(result.ood_score, 4),
                  "ood_reason": result.ood_reason,
                  "predicted_class": result.predicted_class, "threshold": round(model.threshold, 6),
                  "decision": result.decision, "refer_reason": result.refer_reason,
                  "prediction_set": result.prediction_set}
        if args.neighbours:
            record["seen_in_training"] = result.seen_in_training
            record["neighbours"] = result.neighbours
        if args.json:
            print(json.dumps(record))
        else:
            spread = "" if result.uncertainty is None else f" ± {result.uncertainty:.4f}"
            if result.out_of_distribution:
                spread += (" [WARNING: does not look like the brain slices the model was trained on: "
                           f"{result.ood_reason}]")
            print(f"{result.name}: tumor probability {result.probability:.4f}{spread} -> "
                  f"{result.decision or result.predicted_class} (threshold {model.threshold:.3f})"
                  + (f" [refer: {result.refer_reason}]" if result.refer_reason else "")
                  + (f" set {result.prediction_set}" if result.prediction_set is not None else ""))
            if result.neighbours:
                if result.seen_in_training:
                    print("  seen in training: a near-copy of a training image (below)")
                for near in result.neighbours:
                    print(f"  {near['similarity']:.3f}  label {near['label']}  group {near['group']}  {near['path']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
