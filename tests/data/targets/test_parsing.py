"""Parsing R-CNN targets and mapper: crop + nearest resize against a per-pixel loop and cv2,
left/right flips, the parsing IoU against the reference formula, the mapper on fabricated
records."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from d2seg.config import load_config
from d2seg.data.mappers.base import DatasetFileError
from d2seg.data.mappers.parsing import ParsingDatasetMapper
from d2seg.data.targets.parsing import (
    PersonPartMaps,
    crop_and_resize_part_maps,
    flip_lookup,
    parsing_iou,
)
from tests.helpers.scripts import REPO_ROOT

CIHP_FLIP_PAIRS = [(14, 15), (16, 17), (18, 19)]


def _brute_force_target(part_map: np.ndarray, box, side: int) -> np.ndarray:
    """The target written out pixel by pixel: the reference's rounded box and nearest-neighbour
    rule, background wherever the box leaves the image."""
    height, width = part_map.shape
    x0, y0, x1, y1 = (int(torch.round(torch.tensor(float(v)))) for v in box)
    box_w, box_h = max(x1 - x0, 1), max(y1 - y0, 1)
    out = np.zeros((side, side), dtype=np.int64)
    for i in range(side):
        for j in range(side):
            y = y0 + (i * box_h) // side
            x = x0 + (j * box_w) // side
            if 0 <= y < height and 0 <= x < width:
                out[i, j] = part_map[y, x]
    return out


def _random_boxes(rng, count, height, width):
    """Boxes of every kind: inside, across each border, beyond the image, thinner than 1 px,
    and with .5 coordinates (rounded half to even, as torch.round in the reference)."""
    x0 = rng.uniform(-0.4 * width, width, count)
    y0 = rng.uniform(-0.4 * height, height, count)
    boxes = np.stack(
        [x0, y0, x0 + rng.uniform(0.2, width, count), y0 + rng.uniform(0.2, height, count)], 1
    )
    boxes[:4] = [
        [2.5, 3.5, 20.5, 9.5],
        [-10, -5, 3, 4],
        [width - 3, 2, width + 30, 9],
        [5, 5, 5.3, 5.2],
    ]
    return torch.tensor(boxes, dtype=torch.float32)


def test_crop_and_resize_matches_per_pixel_loop_with_boxes_outside_the_image():
    rng = np.random.default_rng(0)
    height, width, side = 37, 53, 16
    maps = torch.from_numpy(rng.integers(0, 20, (3, height, width), dtype=np.uint8))
    boxes = _random_boxes(rng, 40, height, width)
    person = torch.from_numpy(rng.integers(0, 3, 40))
    targets = crop_and_resize_part_maps(maps, person, boxes, side)
    assert targets.shape == (40, side, side) and targets.dtype == torch.int64
    for k in range(40):
        expected = _brute_force_target(maps[person[k]].numpy(), boxes[k].tolist(), side)
        np.testing.assert_array_equal(targets[k].numpy(), expected, err_msg=f"box {k}")
    # a box half outside: its outer half is background, not the stretched inner half
    half_out = crop_and_resize_part_maps(
        torch.full((1, 8, 8), 7, dtype=torch.uint8),
        torch.tensor([0]),
        torch.tensor([[-8.0, 0.0, 8.0, 8.0]]),
        4,
    )
    assert half_out[0].tolist() == [[0, 0, 7, 7]] * 4


def test_crop_and_resize_matches_cv2_nearest_inside_the_image():
    """The reference's own op (round box, slice, cv2.resize INTER_NEAREST) on boxes inside the
    image: equal except where cv2's floating point lands one pixel lower, which only happens at
    output positions j with j * w an exact multiple of the output side."""
    rng = np.random.default_rng(1)
    height, width, side = 300, 400, 128
    part_map = rng.integers(0, 20, (height, width), dtype=np.uint8)
    mismatched = 0
    for _ in range(60):
        x0, y0 = rng.integers(0, width - 2), rng.integers(0, height - 2)
        x1, y1 = rng.integers(x0 + 1, width + 1), rng.integers(y0 + 1, height + 1)
        box = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
        ours = crop_and_resize_part_maps(
            torch.from_numpy(part_map[None]), torch.tensor([0]), box, side
        )[0].numpy()
        theirs = cv2.resize(part_map[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_NEAREST)
        rows, cols = np.nonzero(ours != theirs)
        exact = ((rows * int(y1 - y0)) % side == 0) | ((cols * int(x1 - x0)) % side == 0)
        assert exact.all(), (x0, y0, x1, y1)
        mismatched += len(rows)
    assert mismatched < 0.01 * 60 * side * side


def test_person_part_maps_index_without_copying():
    maps = torch.randint(0, 20, (3, 10, 12), dtype=torch.uint8)
    gt = PersonPartMaps(maps)
    picked = gt[torch.tensor([2, 2, 0, 1, 2])]
    assert len(picked) == 5 and picked.maps is maps
    assert picked[torch.tensor([True, False, True, False, False])].person_index.tolist() == [2, 0]
    assert picked[1].person_index.tolist() == [2]
    box = torch.tensor([[0.0, 0.0, 12.0, 10.0]])
    np.testing.assert_array_equal(
        picked[3].crop_and_resize(box, 10)[0].numpy(),
        maps[1, :, ::1][:, (np.arange(10) * 12) // 10].numpy(),
    )
    with pytest.raises(ValueError, match="uint8"):
        PersonPartMaps(maps.long())


def test_flip_lookup_swaps_exactly_the_pairs():
    table = flip_lookup(CIHP_FLIP_PAIRS)
    expected = list(range(256))
    for left, right in CIHP_FLIP_PAIRS:
        expected[left], expected[right] = right, left
    assert table.tolist() == expected
    assert table.dtype == np.uint8 and (table[table] == np.arange(256)).all()
    for bad in ([(3, 3)], [(1, 2), (2, 5)], [(0, 4)], [(1, 255)], [(1, 2, 3)]):
        with pytest.raises(ValueError, match="parsing_flip_pairs"):
            flip_lookup(bad)


def _reference_mean_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """The reference's cal_one_mean_iou + np.nanmean (confusion matrix by bincount)."""
    hist = (
        np.bincount(num_classes * pred.reshape(-1) + gt.reshape(-1), minlength=num_classes**2)
        .reshape(num_classes, num_classes)
        .astype(float)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    return float(np.nanmean(iou))


def test_parsing_iou_against_the_reference_formula():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 6, (7, 9, 9))
    gt = rng.integers(0, 6, (7, 9, 9))
    gt[3] = 0  # few classes present: nanmean over classes in either map
    pred[4] = gt[4]
    ours = parsing_iou(torch.from_numpy(pred), torch.from_numpy(gt), 6)
    expected = [_reference_mean_iou(p, g, 6) for p, g in zip(pred, gt)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6)
    assert ours[4] == 1.0
    # one pixel of part 1 predicted as part 2, three background pixels right: (1 + 0 + 0) / 3
    p, g = torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)
    g[0, 0, 0], p[0, 0, 0] = 1, 2
    assert parsing_iou(p, g, 3).item() == pytest.approx(1 / 3)
    # an ignored target pixel counts nowhere, its prediction neither: background alone, 1
    g[0, 0, 0] = 255
    assert parsing_iou(p, g, 3).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="part id 3"):  # ids run 0 .. num_classes - 1
        parsing_iou(p, torch.full_like(g, 3), 3)


# --- the mapper on fabricated records (dataset records as the contract with the loader says)


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
