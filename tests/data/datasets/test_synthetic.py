"""The registered synthetic splits: real formats, records consistent with the files they name."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools.coco import COCO

from d2seg.data.datasets.builtin import datasets_root
from d2seg.data.synthetic.instance_panoptic import SYNTHETIC_SPLITS
from d2seg.data.synthetic.parsing import (
    SYNTHETIC_PARSING_SPLITS,
    ensure_synthetic_parsing_dataset,
)

SPLITS = list(SYNTHETIC_SPLITS)


@pytest.fixture(scope="module")
def synthetic_parsing_root():
    return ensure_synthetic_parsing_dataset(datasets_root())


@pytest.mark.parametrize("split", SPLITS)
def test_instance_records_are_consistent(synthetic_root, split):
    records = DatasetCatalog.get(f"d2seg_synthetic_instance_{split}")
    assert len(records) == SYNTHETIC_SPLITS[split].num_images
    coco = COCO(str(synthetic_root / "annotations" / f"instances_{split}.json"))
    kinds = set()
    for record in records:
        for annotation in record["annotations"]:
            x, y, w, h = annotation["bbox"]
            assert annotation["bbox_mode"] == BoxMode.XYWH_ABS
            assert x >= 0 and y >= 0 and x + w <= record["width"] and y + h <= record["height"]
            assert 0 <= annotation["category_id"] < 3
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=record["image_id"])):
            mask = coco.annToMask(annotation)
            assert mask.shape == (record["height"], record["width"])
            assert mask.sum() == annotation["area"] > 0
            ys, xs = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            kinds.add(
                (
                    "rle" if isinstance(annotation["segmentation"], dict) else "polygon",
                    annotation["iscrowd"],
                )
            )
    assert {("polygon", 0), ("rle", 0), ("rle", 1)} <= kinds


@pytest.mark.parametrize("split", SPLITS)
def test_panoptic_segments_match_png(synthetic_root, split):
    records = DatasetCatalog.get(f"d2seg_synthetic_panoptic_{split}")
    metadata = MetadataCatalog.get(f"d2seg_synthetic_panoptic_{split}")
    panoptic = json.loads((synthetic_root / "annotations" / f"panoptic_{split}.json").read_text())
    infos = {a["image_id"]: a["segments_info"] for a in panoptic["annotations"]}
    stuff_seen = set()
    for record in records[:20]:
        ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"])))
        # every pixel is labelled, and by exactly the segments that the json lists
        assert set(np.unique(ids)) == {s["id"] for s in record["segments_info"]}
        for raw in infos[record["image_id"]]:
            assert (ids == raw["id"]).sum() == raw["area"]
        for segment in record["segments_info"]:
            if not segment["isthing"]:
                stuff_seen.add(segment["category_id"])
    assert stuff_seen == set(metadata.stuff_dataset_id_to_contiguous_id.values())


def test_separated_split_has_things_as_zero(synthetic_root):
    record = DatasetCatalog.get("d2seg_synthetic_panoptic_val_separated")[0]
    semantic = np.asarray(Image.open(record["sem_seg_file_name"]))
    thing_pixels = np.zeros(semantic.shape, bool)
    for annotation in record["annotations"]:
        if not annotation["iscrowd"]:
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, list):
                rle = mask_util.merge(mask_util.frPyObjects(segmentation, *semantic.shape))
            else:
                rle = segmentation
            thing_pixels |= mask_util.decode(rle).astype(bool)
    assert (semantic[thing_pixels] == 0).all()
    assert set(np.unique(semantic[~thing_pixels])) <= {0, 1, 2, 3}


def test_synthetic_sem_seg_split_is_registered_for_the_sem_seg_evaluator(synthetic_root):
    meta = MetadataCatalog.get("d2seg_synthetic_sem_seg_val")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.stuff_classes == ["circle", "triangle", "square", "sky", "grass", "sand"]
    records = DatasetCatalog.get("d2seg_synthetic_sem_seg_val")
    assert len(records) == 48
    labels = np.asarray(Image.open(records[0]["sem_seg_file_name"]))
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5, 255} and (labels == 255).any()
    assert Image.open(records[0]["file_name"]).size == labels.shape[::-1]


@pytest.mark.parametrize("split", ["train", "val"])
def test_synthetic_records_match_the_cihp_maps(synthetic_parsing_root, split):
    records = DatasetCatalog.get(f"d2seg_synthetic_parsing_{split}")
    assert len(records) == SYNTHETIC_PARSING_SPLITS[split].num_images
    folder = "Training" if split == "train" else "Validation"
    assert sum(len(r["annotations"]) for r in records) >= 2 * len(records)
    for record in records[:8]:
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        assert record["file_name"].endswith(f"{folder}/Images/{stem}.jpg")
        categories = np.asarray(Image.open(record["parsing_semseg_file_name"]))
        humans = np.asarray(
            Image.open(
                os.path.join(
                    synthetic_parsing_root,
                    "instance-level_human_parsing",
                    folder,
                    "Human_ids",
                    stem + ".png",
                )
            )
        )
        assert categories.shape == (record["height"], record["width"])
        union = np.zeros_like(categories)
        for person, annotation in enumerate(record["annotations"], start=1):
            part_map = np.asarray(Image.open(annotation["parsing_file_name"]))
            mask = humans == person
            assert np.array_equal(part_map, np.where(mask, categories, 0))
            assert np.array_equal(mask_util.decode(annotation["segmentation"]), mask)
            ys, xs = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            union = np.maximum(union, part_map)
        assert np.array_equal(union, categories)
