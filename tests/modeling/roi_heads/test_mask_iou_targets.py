"""MaskIoU targets against brute force on full-resolution masks, polygon and bitmask inputs."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import BitMasks, PolygonMasks

from d2seg.modeling.roi_heads.mask_iou_targets import gt_inbox_fraction, mask_iou_targets

HEIGHT, WIDTH = 61, 83


def _random_objects(rng, count):
    """Random star-shaped polygons, some crossing the image border; with their bitmasks."""
    polygons, masks = [], []
    while len(polygons) < count:
        cx, cy = rng.uniform(-5, WIDTH + 5), rng.uniform(-5, HEIGHT + 5)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=rng.integers(3, 9)))
        radii = rng.uniform(4, 25, size=len(angles))
        polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        rle = mask_util.merge(mask_util.frPyObjects([polygon.reshape(-1).tolist()], HEIGHT, WIDTH))
        mask = mask_util.decode(rle).astype(bool)
        if mask.sum() >= 20:
            polygons.append([polygon.reshape(-1)])
            masks.append(mask)
    return polygons, np.stack(masks)


def _random_boxes_around(rng, masks):
    """A box per object, like a positive RoI: it jitters each side of the object's box by up to
    a third of its size, so it often leaves part of the object outside."""
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        w, h = x1 - x0, y1 - y0
        jitter = rng.uniform(-1 / 3, 1 / 3, size=4) * [w, h, w, h]
        boxes.append([x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3]])
    return torch.tensor(boxes, dtype=torch.float32)


def _brute_force_fraction(mask, box):
    """Loop over every pixel: inside when its centre lies in [x0, x1) x [y0, y1)."""
    inside = 0
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x] and box[0] <= x + 0.5 < box[2] and box[1] <= y + 0.5 < box[3]:
                inside += 1
    return inside / mask.sum()


@pytest.fixture(scope="module")
def objects():
    rng = np.random.default_rng(3)
    polygons, masks = _random_objects(rng, 24)
    boxes = _random_boxes_around(rng, masks)
    expected = torch.tensor(
        [_brute_force_fraction(m, b.tolist()) for m, b in zip(masks, boxes)], dtype=torch.float32
    )
    return polygons, masks, boxes, expected


def test_inbox_fraction_matches_brute_force_for_both_formats(objects):
    polygons, masks, boxes, expected = objects
    assert (expected < 1).sum() >= 10 and (expected > 0).all()  # many objects leave the box
    from_bitmasks = gt_inbox_fraction(BitMasks(torch.from_numpy(masks)), boxes, (HEIGHT, WIDTH))
    from_polygons = gt_inbox_fraction(PolygonMasks(polygons), boxes, (HEIGHT, WIDTH))
    torch.testing.assert_close(from_bitmasks, expected.float())
    torch.testing.assert_close(from_polygons, expected.float())


@pytest.mark.parametrize("mask_format", ["bitmask", "polygon"])
def test_iou_targets_match_brute_force(objects, mask_format):
    polygons, masks, boxes, fractions = objects
    gt = BitMasks(torch.from_numpy(masks)) if mask_format == "bitmask" else PolygonMasks(polygons)
    side = 28
    gt_targets = gt.crop_and_resize(boxes, side)
    logits = torch.randn(len(boxes), side, side) * 2
    targets = mask_iou_targets(logits, gt_targets, gt_inbox_fraction(gt, boxes, (HEIGHT, WIDTH)))
    for r in range(len(boxes)):
        predicted = (torch.sigmoid(logits[r]) > 0.5).numpy()
        target = (gt_targets[r].float() > 0.5).numpy()
        intersection = float((predicted & target).sum())
        full_object = float(target.sum()) / float(fractions[r])
        union = float(predicted.sum()) + full_object - intersection
        assert targets[r].item() == pytest.approx(intersection / max(union, 1.0), rel=1e-5)


def test_perfect_in_box_prediction_scores_the_in_box_fraction(objects):
    """Predicting exactly the in-box part of an object is not a perfect mask: the parts outside
    the box count in the union, so the target equals the in-box fraction of the object."""
    _, masks, boxes, fractions = objects
    gt = BitMasks(torch.from_numpy(masks))
    gt_targets = gt.crop_and_resize(boxes, 28)
    logits = torch.where(gt_targets, 10.0, -10.0)
    targets = mask_iou_targets(logits, gt_targets, fractions)
    torch.testing.assert_close(targets, fractions.float(), rtol=1e-5, atol=1e-6)
    assert (targets[fractions < 0.9] < 0.9).all()


def test_targets_carry_no_gradient():
    logits = torch.randn(3, 28, 28, requires_grad=True)
    targets = mask_iou_targets(logits, torch.rand(3, 28, 28) > 0.5, torch.full((3,), 0.5))
    assert not targets.requires_grad
