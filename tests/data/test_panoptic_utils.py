"""Panoptic metadata and the stuff-semantic conversion, against brute force on real data."""

import json

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from d2seg.data.panoptic_utils import (
    VOID_LABEL,
    panoptic_to_stuff_semantic,
    separated_panoptic_metadata,
    standard_panoptic_metadata,
)


def test_stuff_semantic_matches_per_pixel_lookup(coco_sample):
    panoptic = json.loads((coco_sample / "panoptic_examples.json").read_text())
    categories = panoptic["categories"]
    stuff_ids = [c["id"] for c in categories if not c["isthing"]]
    thing_ids = {c["id"] for c in categories if c["isthing"]}
    for annotation in panoptic["annotations"]:
        png = coco_sample / "panoptic_examples" / annotation["file_name"]
        ids = rgb2id(np.asarray(Image.open(png).convert("RGB")))
        semantic = panoptic_to_stuff_semantic(ids, annotation["segments_info"], categories)
        category_of = {s["id"]: s["category_id"] for s in annotation["segments_info"]}
        values = set()
        for y in range(0, ids.shape[0], 5):
            for x in range(0, ids.shape[1], 5):
                category = category_of.get(int(ids[y, x]))
                if category is None:
                    expected = VOID_LABEL
                elif category in thing_ids:
                    expected = 0
                else:
                    expected = stuff_ids.index(category) + 1
                assert semantic[y, x] == expected, (png, y, x)
                values.add(expected)
        assert 0 in values and len(values - {0, VOID_LABEL}) >= 2  # things and several stuff


def test_metadata_id_maps(coco_sample):
    categories = json.loads((coco_sample / "panoptic_coco_categories.json").read_text())
    standard = standard_panoptic_metadata(categories)
    separated = separated_panoptic_metadata(categories)
    assert len(standard["thing_dataset_id_to_contiguous_id"]) == 80
    assert len(standard["stuff_dataset_id_to_contiguous_id"]) == 53
    joined = {
        **standard["thing_dataset_id_to_contiguous_id"],
        **standard["stuff_dataset_id_to_contiguous_id"],
    }
    assert sorted(joined.values()) == list(range(133))
    assert sorted(separated["thing_dataset_id_to_contiguous_id"].values()) == list(range(80))
    assert sorted(separated["stuff_dataset_id_to_contiguous_id"].values()) == list(range(54))
    assert separated["stuff_classes"][0] == "things" and len(separated["stuff_classes"]) == 54
