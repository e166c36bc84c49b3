"""Parsing R-CNN's per-RoI targets: crop + nearest resize against a per-pixel loop and cv2, and
the parsing IoU against the reference formula."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from d2seg.modeling.roi_heads.parsing_targets import crop_and_resize_part_maps, parsing_iou


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
