"""Human-parsing registrations and the prepared-json loader."""

import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from d2seg.data.datasets import human_parsing
from d2seg.data.datasets.human_parsing import PARSING_FAMILIES, load_parsing_json


@pytest.mark.parametrize(
    ("name", "num_classes", "class_10", "flip_pairs"),
    [
        ("cihp", 20, "torso-skin", [[14, 15], [16, 17], [18, 19]]),
        ("lip", 20, "jumpsuits", [[14, 15], [16, 17], [18, 19]]),
        (
            "mhp_v2",
            59,
            "bikini/bra",
            [[5, 6], [7, 8], [22, 23], [24, 25], [26, 27], [28, 29], [30, 31], [32, 33]],
        ),
        ("d2seg_synthetic_parsing", 20, "torso-skin", [[14, 15], [16, 17], [18, 19]]),
    ],
)
def test_metadata(name, num_classes, class_10, flip_pairs):
    for split in ("train", "val"):
        metadata = MetadataCatalog.get(f"{name}_{split}")
        classes = metadata.parsing_classes
        assert len(classes) == len(metadata.parsing_colors) == num_classes
        assert classes[0] == "background" and classes[10] == class_10
        assert metadata.parsing_flip_pairs == flip_pairs
        for left, right in flip_pairs:  # each pair names a left part and its right twin
            assert classes[left].startswith("left-") and classes[right].startswith("right-")
            assert classes[left][5:] == classes[right][6:]
        assert len({tuple(c) for c in metadata.parsing_colors}) == num_classes
        assert metadata.thing_classes == ["person"]
        assert metadata.evaluator_type == "parsing" and metadata.ignore_label == 255
        assert metadata.json_file.endswith(f"annotations/parsing_{split}.json")


def test_cihp_names_follow_the_release():
    assert human_parsing.CIHP_CLASSES[13:] == (
        "face",
        "left-arm",
        "right-arm",
        "left-leg",
        "right-leg",
        "left-shoe",
        "right-shoe",
    )
    assert human_parsing.MHP_V2_CLASSES[58] == "other-lower-body-clothes"
    assert human_parsing.LIP_PALETTE[14] == (51, 170, 221)  # left arm, as LIP draws it


def test_missing_root_names_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    family = PARSING_FAMILIES["cihp"]
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS") as error:
        human_parsing._load_family_split(family, str(tmp_path / "CIHP"), "val")
    assert str(tmp_path / "CIHP") in str(error.value)
    assert "instance-level_human_parsing" in str(error.value)


def test_unprepared_root_names_the_prepare_command(tmp_path):
    (tmp_path / "LIP").mkdir()
    with pytest.raises(FileNotFoundError, match="prepare_parsing.py lip"):
        human_parsing._load_family_split(PARSING_FAMILIES["lip"], str(tmp_path / "LIP"), "val")


@pytest.mark.parametrize(("name", "dirname"), [("cihp", "CIHP"), ("mhp_v2", "LV-MHP-v2")])
def test_registered_loaders_read_the_family_root(name, dirname):
    from d2seg.data.datasets.builtin import datasets_root

    expected = os.path.join(datasets_root(), dirname)
    if os.path.isdir(expected):
        pytest.skip(f"{expected} exists here")
    with pytest.raises(FileNotFoundError, match=expected):
        DatasetCatalog.get(f"{name}_val")


def _write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return str(path)


def test_loader_errors_name_file_and_key(tmp_path):
    image = {"id": 1, "file_name": "a.jpg", "height": 4, "width": 4, "semseg_file_name": "a.png"}
    person = {
        "id": 7,
        "image_id": 1,
        "category_id": 1,
        "bbox": [0, 0, 1, 1],
        "segmentation": {},
        "parsing_file_name": "a_1.png",
    }
    path = tmp_path / "annotations" / "parsing_val.json"
    records = load_parsing_json(
        _write_json(path, {"images": [image], "annotations": [person]}), str(tmp_path)
    )
    assert records[0]["annotations"][0]["parsing_file_name"] == str(tmp_path / "a_1.png")
    assert records[0]["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS
    bad = {"images": [image], "annotations": [{**person, "parsing_file_name": None}]}
    del bad["annotations"][0]["parsing_file_name"]
    with pytest.raises(KeyError, match=r"parsing_val.json.*annotation 7.*parsing_file_name"):
        load_parsing_json(_write_json(path, bad), str(tmp_path))
    with pytest.raises(ValueError, match=r"parsing_val.json.*category_id 3"):
        load_parsing_json(
            _write_json(path, {"images": [image], "annotations": [{**person, "category_id": 3}]}),
            str(tmp_path),
        )
    with pytest.raises(KeyError, match=r"unknown image ids \[2\]"):
        load_parsing_json(
            _write_json(path, {"images": [image], "annotations": [{**person, "image_id": 2}]}),
            str(tmp_path),
        )
