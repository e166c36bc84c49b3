"""datasets/prepare_parsing.py on fabricated trees in each release's original layout."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from d2seg.data.datasets.human_parsing import load_parsing_json
from tests.helpers.scripts import load_script

prepare = load_script("datasets/prepare_parsing.py")

HEIGHT, WIDTH = 12, 16


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _image(path):
    _save(path, np.full((HEIGHT, WIDTH, 3), 128))


def _person(x0, y0, x1, y1, labels):
    """An image-sized part map: a box filled with `labels` stripes (top to bottom)."""
    part_map = np.zeros((HEIGHT, WIDTH), np.uint8)
    rows = np.array_split(np.arange(y0, y1), len(labels))
    for label, ys in zip(labels, rows):
        part_map[ys, x0:x1] = label
    return part_map


PERSONS = {  # image stem -> its persons, back to front
    "0000001": [_person(1, 1, 7, 11, [2, 13, 5, 9]), _person(5, 2, 12, 12, [1, 14, 15])],
    "0000002": [_person(9, 0, 16, 6, [18, 19])],
}


def _prepared(root, split):
    content = json.loads((root / "annotations" / f"parsing_{split}.json").read_text())
    records = load_parsing_json(str(root / "annotations" / f"parsing_{split}.json"), str(root))
    return content, records


def _check_persons(records, persons_by_stem, semseg_of):
    """Records hold exactly the given persons (in order) and the given global maps."""
    assert [r["file_name"].rsplit("/", 1)[1] for r in records] == [
        stem + ".jpg" for stem in persons_by_stem
    ]
    for record, (stem, persons) in zip(records, persons_by_stem.items()):
        assert (record["height"], record["width"]) == (HEIGHT, WIDTH)
        semseg = np.asarray(Image.open(record["parsing_semseg_file_name"]))
        assert np.array_equal(semseg, semseg_of(stem))
        assert len(record["annotations"]) == len(persons)
        for annotation, expected in zip(record["annotations"], persons):
            assert np.array_equal(np.asarray(Image.open(annotation["parsing_file_name"])), expected)
            mask = mask_util.decode(annotation["segmentation"]).astype(bool)
            assert np.array_equal(mask, (expected > 0) & (expected != 255))  # 255: ignored
            ys, xs = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _cihp_tree(root, id_list_inside=True):
    """CIHP's release: Category_ids + Human_ids (+ Instance_ids), ids in <split>_id.txt."""
    split_dir = root / "instance-level_human_parsing" / "Validation"
    for stem, persons in PERSONS.items():
        categories = np.zeros((HEIGHT, WIDTH), np.uint8)
        humans = np.zeros((HEIGHT, WIDTH), np.uint8)
        for index, person in enumerate(persons, start=1):
            categories[person > 0] = person[person > 0]
            humans[person > 0] = index
        _image(split_dir / "Images" / f"{stem}.jpg")
        _save(split_dir / "Category_ids" / f"{stem}.png", categories)
        _save(split_dir / "Human_ids" / f"{stem}.png", humans)
        _save(split_dir / "Instance_ids" / f"{stem}.png", humans)
    id_list = split_dir if id_list_inside else split_dir.parent
    (id_list / "val_id.txt").write_text("0000001\n0000002\n")
    return split_dir


@pytest.mark.parametrize("id_list_inside", [True, False])
def test_cihp(tmp_path, id_list_inside, capsys):
    split_dir = _cihp_tree(tmp_path, id_list_inside)
    prepare.main(["cihp", "--root", str(tmp_path), "--splits", "val", "--workers", "1"])
    assert "CIHP val" in capsys.readouterr().err  # tqdm progress
    content, records = _prepared(tmp_path, "val")
    assert content["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
    # A person hidden behind another keeps only its visible pixels (Human_ids says whose).
    visible = {stem: [p.copy() for p in persons] for stem, persons in PERSONS.items()}
    front = PERSONS["0000001"][1] > 0
    visible["0000001"][0][front] = 0

    def semseg(stem):
        return np.asarray(Image.open(split_dir / "Category_ids" / f"{stem}.png"))

    _check_persons(records, visible, semseg)
    assert records[0]["parsing_semseg_file_name"] == str(split_dir / "Category_ids" / "0000001.png")


def test_cihp_is_idempotent_with_workers(tmp_path):
    _cihp_tree(tmp_path)
    args = ["cihp", "--root", str(tmp_path), "--splits", "val"]
    prepare.main([*args, "--workers", "2"])
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    prepare.main([*args, "--workers", "1"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == first
    assert not [p for p in first if "partial" in p.name]


def test_cihp_bad_part_id_names_the_file(tmp_path):
    split_dir = _cihp_tree(tmp_path)
    bad = split_dir / "Category_ids" / "0000002.png"
    _save(bad, np.full((HEIGHT, WIDTH), 20))  # CIHP has ids 0..19 (and 255)
    with pytest.raises(ValueError, match=r"0000002\.png.*part ids \[20\].*0\.\.19"):
        prepare.main(["cihp", "--root", str(tmp_path), "--splits", "val", "--workers", "1"])


def test_missing_release_names_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS") as error:
        prepare.main(["lip", "--splits", "val"])
    assert str(tmp_path / "LIP") in str(error.value)


def test_mhp_v2_reads_channel_0_and_paints_persons_in_file_order(tmp_path):
    """Per-person PNGs <image>_<N>_<k>.png (3 channels, part id in channel 0)."""
    for stem, persons in PERSONS.items():
        _image(tmp_path / "val" / "images" / f"{stem}.jpg")
        for k, person in enumerate(persons, start=1):
            rgb = np.stack([person, np.full_like(person, 200), person // 2 + 3], axis=2)
            _save(
                tmp_path / "val" / "parsing_annos" / f"{stem}_{len(persons):02d}_{k:02d}.png", rgb
            )
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "val.txt").write_text("0000001\n0000002\n")
    prepare.main(["mhp_v2", "--root", str(tmp_path), "--splits", "val", "--workers", "1"])
    _, records = _prepared(tmp_path, "val")

    def semseg(stem):
        painted = np.zeros((HEIGHT, WIDTH), np.uint8)
        for person in PERSONS[stem]:  # later persons over earlier ones
            painted[person > 0] = person[person > 0]
        return painted

    _check_persons(records, PERSONS, semseg)
    assert records[0]["parsing_semseg_file_name"] == str(tmp_path / "semseg_val" / "0000001.png")


def test_mhp_v2_image_without_annotation_is_named(tmp_path):
    _image(tmp_path / "val" / "images" / "5.jpg")
    (tmp_path / "val" / "parsing_annos").mkdir(parents=True)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "val.txt").write_text("5\n")
    with pytest.raises(FileNotFoundError, match=r"'5'.*5_<N>_<k>\.png"):
        prepare.main(["mhp_v2", "--root", str(tmp_path), "--splits", "val", "--workers", "1"])


@pytest.mark.parametrize("layout", ["released", "nested", "flattened"])
def test_lip(tmp_path, layout):
    """One person per image (ignored pixels are not part of it); an all-background image keeps
    its record without annotation."""
    person = PERSONS["0000002"][0].copy()
    person[HEIGHT - 1, 0] = 255
    images = {"100034_483681": person, "77_471474": np.zeros((HEIGHT, WIDTH))}
    image_dir, seg_dir, list_dir = {
        "released": (
            "TrainVal_images/val_images",
            "TrainVal_parsing_annotations/val_segmentations",
            "TrainVal_images",
        ),
        "nested": (
            "TrainVal_images/val_images",
            "TrainVal_parsing_annotations/TrainVal_parsing_annotations/val_segmentations",
            "TrainVal_images",
        ),
        "flattened": ("val_images", "val_segmentations", "."),
    }[layout]
    for stem, part_map in images.items():
        _image(tmp_path / image_dir / f"{stem}.jpg")
        _save(tmp_path / seg_dir / f"{stem}.png", part_map)
    (tmp_path / list_dir / "val_id.txt").write_text("\n".join(images) + "\n")
    prepare.main(["lip", "--root", str(tmp_path), "--splits", "val", "--workers", "1"])
    _, records = _prepared(tmp_path, "val")
    _check_persons(
        records,
        {"100034_483681": [images["100034_483681"]], "77_471474": []},
        lambda stem: images[stem],
    )
