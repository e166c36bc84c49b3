"""The synthetic dataset: real COCO formats, self-consistent records, deterministic, atomic."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools.coco import COCO

from d2seg.data.datasets import synthetic

SPLITS = list(synthetic.SYNTHETIC_SPLITS)


@pytest.mark.parametrize("split", SPLITS)
def test_instance_records_are_consistent(synthetic_root, split):
    records = DatasetCatalog.get(f"d2seg_synthetic_instance_{split}")
    assert len(records) == synthetic.SYNTHETIC_SPLITS[split].num_images
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


def test_generation_is_deterministic(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setattr(synthetic, "SYNTHETIC_SPLITS", {"val": synthetic.SYNTHETIC_SPLITS["val"]})
    root = synthetic.ensure_synthetic_dataset(str(tmp_path))
    for name in (
        "annotations/instances_val.json",
        "annotations/panoptic_val.json",
        "panoptic_val/val_000007.png",
    ):
        assert (tmp_path / synthetic.SYNTHETIC_DIRNAME / name).read_bytes() == (
            synthetic_root / name
        ).read_bytes(), name
    assert root == str(tmp_path / synthetic.SYNTHETIC_DIRNAME)


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(root, split, spec):
        (tmp_path / "marker").write_text(root)
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_split", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.ensure_synthetic_dataset(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker"]


def test_stale_copy_is_regenerated_and_current_copy_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "SYNTHETIC_SPLITS", {"val": synthetic.SyntheticSplit(3, 5)})
    root = tmp_path / synthetic.SYNTHETIC_DIRNAME
    synthetic.ensure_synthetic_dataset(str(tmp_path))
    (root / "val" / "val_000001.jpg").write_bytes(b"kept")
    synthetic.ensure_synthetic_dataset(str(tmp_path))  # current: untouched
    assert (root / "val" / "val_000001.jpg").read_bytes() == b"kept"
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    synthetic.ensure_synthetic_dataset(str(tmp_path))  # stale: regenerated
    assert (root / "val" / "val_000001.jpg").read_bytes() != b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == [synthetic.SYNTHETIC_DIRNAME]
