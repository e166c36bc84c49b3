"""d2seg's Cityscapes registration on a fabricated miniature tree in the real layout."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from d2seg.data.datasets.cityscapes import (
    CITYSCAPES_THING_LABELS,
    load_cityscapes_instances,
    load_cityscapes_semantic,
)
from tests.helpers.scripts import load_script

prepare_cityscapes = load_script("datasets/prepare_cityscapes.py")


@pytest.fixture(scope="module")
def prepared(cityscapes_root):
    assert (
        prepare_cityscapes.create_train_id_label_images(str(cityscapes_root), ["train", "val"]) == 4
    )
    prepare_cityscapes.create_panoptic_images(str(cityscapes_root), ["train", "val"])
    return cityscapes_root


def _dirs(root, split):
    return str(root / "leftImg8bit" / split), str(root / "gtFine" / split)


def test_instances_follow_instance_ids(prepared):
    records = load_cityscapes_instances(*_dirs(prepared, "val"))
    assert len(records) == 2
    crowd_seen = False
    for record in records:
        gt_file = (
            record["file_name"]
            .replace("leftImg8bit/", "gtFine/")
            .replace("_leftImg8bit.png", "_gtFine_instanceIds.png")
        )
        instance_ids = np.asarray(Image.open(gt_file))
        expected = {}
        for value in np.unique(instance_ids):
            label = id2label[int(value) // 1000 if value >= 1000 else int(value)]
            if label.hasInstances and not label.ignoreInEval:
                expected[int(value)] = (label.name, value < 1000, (instance_ids == value).sum())
        found = sorted(
            (
                CITYSCAPES_THING_LABELS[a["category_id"]].name,
                bool(a["iscrowd"]),
                int(mask_util.area(a["segmentation"])),
            )
            for a in record["annotations"]
        )
        assert found == sorted((n, bool(c), int(a)) for n, c, a in expected.values())
        crowd_seen |= any(a["iscrowd"] for a in record["annotations"])
        for annotation in record["annotations"]:
            x, y, w, h = annotation["bbox"]
            assert x >= 0 and y >= 0 and x + w <= record["width"] and y + h <= record["height"]
    assert crowd_seen


def test_semantic_records_point_at_train_ids(prepared):
    records = load_cityscapes_semantic(*_dirs(prepared, "train"))
    assert len(records) == 2
    for record in records:
        train_ids = np.asarray(Image.open(record["sem_seg_file_name"]))
        label_ids = np.asarray(
            Image.open(record["sem_seg_file_name"].replace("labelTrainIds", "labelIds"))
        )
        lookup = np.array([id2label[i].trainId if i in id2label else 255 for i in range(256)])
        assert np.array_equal(train_ids, lookup[label_ids])


def test_panoptic_files_created(prepared):
    assert (prepared / "gtFine" / "cityscapes_panoptic_val.json").is_file()
    assert len(list((prepared / "gtFine" / "cityscapes_panoptic_val").glob("*.png"))) == 2


def test_missing_root_names_path_and_variable(tmp_path):
    missing = tmp_path / "nowhere" / "leftImg8bit" / "val"
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS") as error:
        load_cityscapes_instances(str(missing), str(tmp_path / "gtFine" / "val"))
    assert str(missing) in str(error.value)


def test_missing_train_ids_says_how_to_create_them(cityscapes_root, tmp_path):
    import shutil

    copy = tmp_path / "cityscapes"
    shutil.copytree(cityscapes_root, copy)
    for f in copy.glob("gtFine/*/*/*_labelTrainIds.png"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="prepare_cityscapes.py"):
        load_cityscapes_semantic(*_dirs(copy, "val"))
