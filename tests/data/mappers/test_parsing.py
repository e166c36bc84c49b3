"""The Parsing R-CNN mapper on fabricated records (dataset records as the contract with the
loader says): each person's part map, flips, errors naming the file, flip pairs from metadata."""

from __future__ import annotations

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from d2seg.config import load_config
from d2seg.data.mappers.base import DatasetFileError
from d2seg.data.mappers.parsing import ParsingDatasetMapper
from d2seg.data.targets.parsing import flip_lookup
from tests.helpers.scripts import REPO_ROOT

CIHP_FLIP_PAIRS = [(14, 15), (16, 17), (18, 19)]


def _fabricated_record(tmp_path, with_bad_person=False):
    """A 20 x 30 image with two persons, each with its own part-map PNG."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    maps = np.zeros((2, 20, 30), dtype=np.uint8)
    maps[0, 2:12, 3:10] = rng.integers(1, 20, (10, 7))
    maps[1, 5:18, 15:28] = rng.choice([14, 15, 16, 17, 18, 19, 5], (13, 13))
    annotations = []
    for k, (box, part_map) in enumerate(zip([[3, 2, 7, 10], [15, 5, 13, 13]], maps)):
        path = tmp_path / f"person_{k}.png"
        Image.fromarray(part_map).save(path)
        annotations.append(
            {
                "bbox": box,
                "bbox_mode": 1,
                "category_id": 0,
                "iscrowd": 0,
                "parsing_file_name": str(path),
            }
        )
    if with_bad_person:  # an empty box: filtered out with its part map
        annotations.insert(1, dict(annotations[0], bbox=[4, 4, 0, 0]))
    record = {
        "file_name": str(tmp_path / "image.png"),
        "image_id": 0,
        "height": 20,
        "width": 30,
        "annotations": annotations,
    }
    return record, image, maps


def _mapper(flip: bool) -> ParsingDatasetMapper:
    augmentations = [T.RandomFlip(prob=1.0)] if flip else []
    return ParsingDatasetMapper(
        is_train=True,
        augmentations=augmentations,
        image_format="RGB",
        use_instance_mask=False,
        flip_table=flip_lookup(CIHP_FLIP_PAIRS),
    )


def test_mapper_reads_each_persons_part_map(tmp_path):
    record, image, maps = _fabricated_record(tmp_path, with_bad_person=True)
    out = _mapper(flip=False)(record)
    instances = out["instances"]
    assert len(instances) == 2 and instances.gt_boxes.tensor[1].tolist() == [15, 5, 28, 18]
    np.testing.assert_array_equal(
        instances.gt_parsing.maps[instances.gt_parsing.person_index], maps
    )
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), image)


def test_mapper_flip_mirrors_and_swaps_left_right_parts(tmp_path):
    record, image, maps = _fabricated_record(tmp_path)
    instances = _mapper(flip=True)(record)["instances"]
    swapped = maps[:, :, ::-1].copy()
    for left, right in CIHP_FLIP_PAIRS:
        swapped[maps[:, :, ::-1] == left] = right
        swapped[maps[:, :, ::-1] == right] = left
    got = instances.gt_parsing.maps[instances.gt_parsing.person_index].numpy()
    np.testing.assert_array_equal(got, swapped)
    untouched = ~np.isin(maps[:, :, ::-1], [14, 15, 16, 17, 18, 19])
    np.testing.assert_array_equal(got[untouched], maps[:, :, ::-1][untouched])
    assert instances.gt_boxes.tensor[1].tolist() == [2, 5, 15, 18]


def test_mapper_names_unreadable_or_wrong_size_part_maps(tmp_path):
    record, _, _ = _fabricated_record(tmp_path)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "person_1.png")
    with pytest.raises(DatasetFileError, match="person_1.png.*20 x 30"):
        _mapper(flip=False)(record)
    (tmp_path / "person_0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFileError, match="person_0.png"):
        _mapper(flip=False)(record)


def test_mapper_takes_flip_pairs_from_the_training_metadata():
    config = str(REPO_ROOT / "configs/Base-ParsingRCNN-FPN.yaml")
    MetadataCatalog.get("_test_parsing_pairs_a").set(parsing_flip_pairs=[[16, 17], [14, 15]])
    MetadataCatalog.get("_test_parsing_pairs_b").set(parsing_flip_pairs=[[14, 15]])
    cfg = load_config(config, ["DATASETS.TRAIN", "('_test_parsing_pairs_a',)"])
    table = ParsingDatasetMapper(cfg, True).flip_table
    assert table[14] == 15 and table[17] == 16 and table[18] == 18
    assert ParsingDatasetMapper(cfg, False).flip_table is None
    both = load_config(
        config, ["DATASETS.TRAIN", "('_test_parsing_pairs_a', '_test_parsing_pairs_b')"]
    )
    with pytest.raises(ValueError, match="disagree"):
        ParsingDatasetMapper(both, True)
    missing = load_config(config, ["DATASETS.TRAIN", "('_test_parsing_no_pairs',)"])
    with pytest.raises(ValueError, match="_test_parsing_no_pairs.*parsing_flip_pairs"):
        ParsingDatasetMapper(missing, True)
    no_flip = load_config(
        config, ["DATASETS.TRAIN", "('_test_parsing_no_pairs',)", "INPUT.RANDOM_FLIP", "none"]
    )
    assert ParsingDatasetMapper(no_flip, True).flip_table is None
