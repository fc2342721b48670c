"""Loading a trained model and predicting: the API that ``engine.predict``,
``engine.evaluate`` and the dashboard share.

A model folder holds ``export/`` (a SavedModel with ``serving_default`` and
``explain`` signatures) and ``model.json`` (image size, decision threshold and
temperature chosen on validation data). The shipped model is ``checkpoints/``; any
finished run folder has the same layout.

Predictions come from the SavedModel's own outputs: the engine hands its
``serving_prepared`` and ``explain`` signatures uint8 pixels framed as in training
(decode, crop when the model crops, PIL resize) and reads back
the calibrated probability, the members' spread, the decision and the prediction set
(engine.serving.export, EXPORT_VERSION 4), so a plain ``tf.saved_model.load`` client and
this module cannot disagree on scaling or calibration. Two cases still calibrate here,
from the logits the graph returns beside: an export older than version 4, and a model
whose model.json holds a calibration not (yet) stamped into its export.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from engine.serving import appearance, input_check, refer
from engine.serving.calibration import calibrated
from engine.serving.export import version_of
from engine.serving.neighbours import NeighbourIndex
from engine.serving.ood import FeatureGaussians
from engine.data import scans
from engine.data.imageio import ImageDecodeError, crop_to_head, decode_rgb, prepare_rgb, read_scan
from engine import layout
from engine.runs import SHIPPED_MODEL_DIR
CLASS_NAMES = {0: "no tumor", 1: "tumor"}


class ModelNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model folder. Frozen: a page, an evaluation and a cross-validation may
    share one; whoever needs other numbers (a new calibration, freshly fitted
    out-of-distribution statistics) takes a copy with ``replace``."""
    directory: Path
    image_size: int
    threshold: float
    temperature: float
    info: dict
    serve: object = field(repr=False)
    explain_fn: object = field(repr=False)
    crop_to_head: bool = False
    members: int = 1
    ood: object = field(default=None, repr=False)  # engine.serving.ood.FeatureGaussians, if fitted
    neighbours: object = field(default=None, repr=False)  # engine.serving.neighbours.NeighbourIndex, if stored
    appearance: object = field(default=None, repr=False)  # engine.serving.appearance statistics, if fitted
    saved: object = field(default=None, repr=False, compare=False)  # keeps the SavedModel's signatures alive
    export_version: int = 0
    stamped: tuple = ()  # (threshold, temperature) the export applies itself; () = none

    def replace(self, **changes) -> "LoadedModel":
        """A copy with ``changes`` (e.g. threshold and temperature); self is unchanged."""
        return dataclasses.replace(self, **changes)

    def warm_up(self) -> "LoadedModel":
        """Run both signatures once on a blank slice and return self. TensorFlow creates
        a function's kernels on its first call (0.64 s for the shipped ensemble's Grad-CAM
        signature and 0.23 s for the plain one, against 0.02 s and 0.01 s after), so a
        server that loads a model behind a spinner warms it there, not in the user's
        first upload."""
        blank = np.zeros([1, self.image_size, self.image_size, 3], np.uint8)
        self.explain_all(blank)
        self.predict_pixels(blank)
        return self

    @property
    def calibrated_in_graph(self) -> bool:
        """Whether the export's own calibrated outputs are this model's: a version-4
        export stamped with this threshold and temperature."""
        return bool(self.stamped) and self.export_version >= 4 and np.allclose(
            self.stamped, (self.threshold, self.temperature), rtol=0, atol=1e-6)

    def view(self, rgb: np.ndarray) -> np.ndarray:
        """The decoded image as the model frames it (cropped to the head if the model
        was trained so), at its own resolution: what heat maps are drawn over."""
        return crop_to_head(rgb) if self.crop_to_head else rgb

    def model_input(self, rgb: np.ndarray) -> np.ndarray:
        """Decoded RGB uint8 -> [S, S, 3] uint8, as in training (imageio.prepare_rgb: the
        same crop and resize); the export scales it."""
        return prepare_rgb(rgb, self.image_size, self.crop_to_head)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """([N, K] member logits, [N, K, C] member features or None for old exports) of
        [0, 1] float images at S, as the tf.data pipeline gives them (evaluation)."""
        out = self.serve(images=tf.convert_to_tensor(images, tf.float32))
        logits = (out["member_logits"].numpy() if "member_logits" in out
                  else out["logit"].numpy()[:, None])
        return logits, (out["features"].numpy() if "features" in out else None)

    def predict_pixels(self, pixels: np.ndarray) -> dict:
        """The export's outputs for uint8 [N, S, S, 3] pixels (model_input), as NumPy:
        ``probability`` [N], ``spread`` [N] (None for one model), ``member_logits``
        [N, K], ``features`` (or None), and with a version-4 export stamped with this
        model's calibration ``decision`` [N] (0, 1, 2 = refer) and ``prediction_set``
        [N, 2]."""
        signature = self.saved.signatures["serving_prepared"] if self.export_version >= 4 else self.serve
        return self._read(self._call(signature, pixels))

    def _call(self, signature, pixels: np.ndarray):
        """A signature on uint8 pixels at S; an export older than version 4 takes [0, 1]
        floats instead (and applies no calibration of its own)."""
        if self.export_version >= 4:
            return signature(pixels=tf.convert_to_tensor(pixels, tf.uint8))
        return signature(images=tf.convert_to_tensor(np.asarray(pixels, np.float32) / 255.0))

    def _read(self, out) -> dict:
        members = (out["member_logits"].numpy() if "member_logits" in out else out["logit"].numpy()[:, None])
        result = {"member_logits": members, "features": out["features"].numpy() if "features" in out else None}
        if self.calibrated_in_graph:
            result.update(probability=out["probability"].numpy().astype(np.float64),
                          spread=out["spread"].numpy() if members.shape[1] > 1 else None,
                          decision=out["decision"].numpy(), prediction_set=out["prediction_set"].numpy())
        else:
            result.update(probability=calibrated(members.mean(axis=1), self.temperature),
                          spread=member_spread(members, self.temperature) if members.shape[1] > 1 else None)
        return result

    def ood_flags(self, features) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(flags [N], scores [N]) of the out-of-distribution check, or (None, None)
        when the model has no fitted statistics."""
        if self.ood is None or features is None:
            return None, None
        scores = self.ood.scores(features)
        return scores > 1.0, scores

    def pixel_findings(self, rgb: np.ndarray) -> list[tuple[str, float]]:
        """[(reason, score > 1)] of every pixel check a decoded image fails
        (engine.serving.input_check, with this model's appearance statistics)."""
        return input_check.findings(rgb, self.appearance)

    def explain_pixels(self, pixels: np.ndarray) -> dict:
        """predict_pixels' outputs plus ``cam``, Grad-CAM [N, S, S] in [0, 1]."""
        out = self._call(self.explain_fn, pixels)
        return {**self._read(out), "cam": out["cam"].numpy()}

    def explain_all(self, pixels: np.ndarray):
        """(probabilities [N], Grad-CAM [N, S, S], uncertainty [N] or None, member
        features [N, K, C] or None for old exports) of uint8 pixels at S: the uncertainty
        is the standard deviation of the members' calibrated probabilities, defined for an
        ensemble only."""
        out = self.explain_pixels(pixels)
        return out["probability"], out["cam"], out["spread"], out["features"]


def member_spread(member_logits: np.ndarray, temperature: float) -> np.ndarray:
    """Standard deviation over ensemble members of their calibrated probabilities."""
    return calibrated(member_logits, temperature).std(axis=1)


def load_model(directory: str | Path | None = None) -> LoadedModel:
    """Load the model in ``directory`` (default: the shipped model)."""
    directory = Path(directory or SHIPPED_MODEL_DIR)
    export = directory / layout.EXPORT
    if not (export / "saved_model.pb").exists():
        raise ModelNotFoundError(f"no exported model in {directory} (expected {export}/saved_model.pb)")
    info_path = directory / layout.MODEL_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    loaded = tf.saved_model.load(str(export))
    image_size = int(info.get("image_size") or loaded.image_size.numpy())
    model = LoadedModel(directory=directory, image_size=image_size,
                        threshold=float(info.get("threshold", 0.5)),
                        temperature=float(info.get("temperature", 1.0)), info=info,
                        # The float path (older exports had it as serving_default).
                        serve=loaded.signatures.get("serving_float") or loaded.signatures["serving_default"],
                        explain_fn=loaded.signatures["explain"],
                        crop_to_head=bool(info.get("crop_to_head", False)),
                        members=int(info.get("members", 1)),
                        ood=FeatureGaussians.load(directory / layout.OOD),
                        neighbours=NeighbourIndex.load(directory), appearance=appearance.load(directory),
                        saved=loaded, export_version=version_of(loaded), stamped=_stamped(loaded))
    return model


def _stamped(loaded) -> tuple:
    """(threshold, temperature) the export applies, () for an export without them."""
    if not (hasattr(loaded, "threshold") and hasattr(loaded, "temperature")):
        return ()
    return (float(loaded.threshold.numpy()), float(loaded.temperature.numpy()))


@dataclass
class Prediction:
    name: str
    probability: float | None = None
    uncertainty: float | None = None  # ensemble spread; None for a single model
    out_of_distribution: bool | None = None  # None: the model has no OOD statistics
    ood_score: float | None = None  # > 1 means out of distribution
    ood_reason: str = ""  # why it was flagged, in words
    predicted_label: int | None = None
    error: str = ""
    source: str = ""  # the file a slice came from (= name for a picture)
    slice_index: int | None = None  # the slice's index in a DICOM or NIfTI file
    identifiers_withheld: bool = False  # the DICOM carried patient identifiers (never read out)
    image: np.ndarray | None = field(default=None, repr=False)  # decoded RGB, original size
    cam: np.ndarray | None = field(default=None, repr=False)
    # The most similar images the model learnt from (engine.serving.neighbours), when asked
    neighbours: list[dict] | None = None
    seen_in_training: bool | None = None
    # engine.serving.refer: "tumor", "no tumor", "refer" (inside the stored band) or "not
    # assessed" (out of distribution); why it was referred; the conformal set.
    decision: str = ""
    refer_reason: str = ""
    prediction_set: list[str] | None = None

    @property
    def predicted_class(self) -> str:
        return "" if self.predicted_label is None else CLASS_NAMES[self.predicted_label]


def predict_files(model: LoadedModel, items: list[tuple[str, bytes]], *, explain: bool = False,
                  batch_size: int = 16, neighbours: int = 0) -> list[Prediction]:
    """Predict every (name, bytes) item; a bad file gets its own error and the others
    are still predicted. A DICOM or NIfTI file with several slices gives one result per
    kept slice, named ``name#slice=K`` (engine.data.scans)."""
    results: list[Prediction] = []
    ready: list[tuple[int, np.ndarray]] = []
    pixel_findings: dict[int, list] = {}  # engine.serving.input_check, per result
    for name, data in items:
        try:
            if scans.is_scan(data):
                scan = read_scan(data, name=name)
                pictures, withheld = list(scan.addressed(name)), scan.had_identifiers
            else:
                pictures, withheld = [(name, None, decode_rgb(data))], False
        except ImageDecodeError as err:
            results.append(Prediction(name, error=str(err), source=name))
            continue
        for slice_name, index, rgb in pictures:
            # The image kept is the model's view (cropped to the head if the model
            # crops), so a heat map overlays the pixels it was computed on.
            results.append(Prediction(slice_name, source=name, slice_index=index,
                                      identifiers_withheld=withheld, image=model.view(rgb)))
            ready.append((len(results) - 1, model.model_input(rgb)))
            pixel_findings[len(results) - 1] = model.pixel_findings(rgb)
    for start in range(0, len(ready), batch_size):
        chunk = ready[start:start + batch_size]
        batch = np.stack([image for _, image in chunk])
        out = model.explain_pixels(batch) if explain else model.predict_pixels(batch)
        probabilities, spread, features = out["probability"], out["spread"], out["features"]
        cams = out["cam"] if explain else [None] * len(chunk)
        graph_decisions = out.get("decision", [None] * len(chunk))
        graph_sets = out.get("prediction_set", [None] * len(chunk))
        flags, scores = model.ood_flags(features)
        nearest = [None] * len(chunk)
        if neighbours and model.neighbours is not None and features is not None:
            nearest = model.neighbours.query(features, neighbours)
        spread = [None] * len(chunk) if spread is None else spread
        flags = [None] * len(chunk) if flags is None else flags
        scores = [None] * len(chunk) if scores is None else scores
        for (index, _), probability, cam, sd, flag, score, near, code, in_set in zip(
                chunk, probabilities, cams, spread, flags, scores, nearest, graph_decisions, graph_sets):
            if near is not None:
                results[index].neighbours = near["neighbours"]
                results[index].seen_in_training = near["seen_in_training"]
            results[index].probability = float(probability)
            results[index].uncertainty = None if sd is None else float(sd)
            results[index].out_of_distribution = None if flag is None else bool(flag)
            results[index].ood_score = None if score is None else float(score)
            if flag:
                results[index].ood_reason = (f"its features lie {score:.1f}x beyond the 99th percentile "
                                             "of unseen training-like images")
            found = pixel_findings.get(index) or []
            if found:
                # A picture that is not a slice is flagged whatever its features say; the
                # score is the largest of the feature and pixel scores.
                results[index].out_of_distribution = True
                results[index].ood_score = max([score for _, score in found] + [results[index].ood_score or 0.0])
                results[index].ood_reason = "; ".join(r for r, _ in found) + (
                    f"; {results[index].ood_reason}" if flag else "")
            results[index].cam = cam
            decide(model, results[index], code, in_set)
    return results


def decide(model: LoadedModel, result: "Prediction", code=None, in_set=None) -> None:
    """The decision a reader acts on and the prediction set: the export's own (``code``
    0 no tumor, 1 tumor, 2 refer; ``in_set`` [no tumor, tumor]) when it applies the
    stored refer band and conformal quantiles itself, else computed from model.json's
    (engine.serving.refer). Out of distribution (checked outside the graph) withholds
    the verdict."""
    result.predicted_label = int(result.probability >= model.threshold)
    margin = float((model.info.get("refer_band") or {}).get("margin", 0.0))
    if code is None:
        result.decision = refer.decisions([result.probability], model.threshold, margin,
                                          [bool(result.out_of_distribution)])[0]
    else:
        result.decision = (refer.NOT_ASSESSED if result.out_of_distribution
                           else (refer.NO_TUMOR, refer.TUMOR, refer.REFER)[int(code)])
    if result.decision == refer.REFER:
        result.refer_reason = refer.refer_reason(result.probability, model.threshold, margin)
    conformal = model.info.get("conformal")
    if not conformal:
        result.prediction_set = None
    elif in_set is None:
        result.prediction_set = refer.prediction_sets([result.probability], conformal)[0]
    else:  # tumor first when both, as refer.prediction_sets orders them
        result.prediction_set = [name for name, kept in ((refer.TUMOR, in_set[1]), (refer.NO_TUMOR, in_set[0]))
                                 if kept]
