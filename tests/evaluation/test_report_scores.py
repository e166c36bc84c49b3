"""The gallery's per-image scores against the formulas written out plainly."""

import numpy as np
import pytest

from d2seg.evaluation.panoptic_evaluation import pq_from_stats
from d2seg.evaluation.parsing_evaluation import semantic_metrics
from d2seg.evaluation.per_image_scores import (
    CONFIDENT_SCORE,
    confusion_score,
    instance_score,
    panoptic_score,
    semantic_score,
)


def _boxes_of(masks):
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, np.float64)


def _brute_instance(gt_masks, pred_masks, scores):
    best = []
    for gt in gt_masks:
        ious = [
            (gt & pred).sum() / (gt | pred).sum()
            for pred, score in zip(pred_masks, scores)
            if score >= 0.5
        ]
        best.append(max(ious, default=0.0))
    return float(np.mean(best))


def _brute_box_iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _random_masks(rng, count, size=24):
    masks = np.zeros((count, size, size), bool)
    for mask in masks:
        y, x = rng.integers(0, size - 6, 2)
        h, w = rng.integers(3, 10, 2)
        mask[y : y + h, x : x + w] = True
        mask[rng.random((size, size)) < 0.05] = True
    return masks


@pytest.mark.parametrize("seed", range(5))
def test_instance_score_is_the_mean_best_mask_iou(seed):
    rng = np.random.default_rng(seed)
    gt, pred = _random_masks(rng, 4), _random_masks(rng, 6)
    pred[0] = gt[0]
    scores = rng.random(6)
    scores[0] = 0.9
    got = instance_score(_boxes_of(gt), _boxes_of(pred), scores, gt, pred)
    assert got == pytest.approx(_brute_instance(gt, pred, scores), abs=1e-12)


def test_instance_score_threshold_is_inclusive():
    assert CONFIDENT_SCORE == 0.5  # the overlays' default drawing threshold
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 2:6, 2:6] = True
    box = _boxes_of(mask)
    assert instance_score(box, box, np.array([0.5]), mask, mask) == 1.0
    assert instance_score(box, box, np.array([np.nextafter(0.5, 0)]), mask, mask) == 0.0


def test_instance_score_box_iou_without_masks():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 40.0]])
    pred = np.array([[5, 0, 15, 10], [20, 20, 30, 30.0], [0, 0, 10, 10.0]])
    scores = np.array([0.9, 0.8, 0.1])  # the exact match scores too low
    expected = np.mean([max(_brute_box_iou(g, p) for p in pred[scores >= 0.5]) for g in gt])
    assert instance_score(gt, pred, scores) == pytest.approx(expected, abs=1e-12)


def test_instance_score_without_ground_truth_or_predictions():
    assert instance_score(np.zeros((0, 4)), np.zeros((1, 4)), np.ones(1)) is None
    assert instance_score(np.ones((1, 4)), np.zeros((0, 4)), np.zeros(0)) == 0.0


def _brute_miou(gt, pred, num_classes, ignore):
    ious = []
    for c in range(num_classes):
        valid = gt != ignore
        g, p = (gt == c) & valid, (pred == c) & valid
        if (g | p).any():
            ious.append((g & p).sum() / (g | p).sum())
    return float(np.mean(ious))


@pytest.mark.parametrize("seed", range(5))
def test_semantic_score_is_the_image_miou(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 5, (16, 20))
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = np.where(rng.random(gt.shape) < 0.7, np.minimum(gt, 4), rng.integers(0, 5, gt.shape))
    pred[gt == 255] = 4  # predictions on ignored pixels do not count
    assert semantic_score(gt, pred, 5) == pytest.approx(_brute_miou(gt, pred, 5, 255), abs=1e-12)


def test_semantic_score_ignore_label_inside_the_classes():
    rng = np.random.default_rng(7)
    gt, pred = rng.integers(0, 4, (10, 10)), rng.integers(0, 4, (10, 10))
    expected = _brute_miou(gt, pred, 4, ignore=2)
    assert semantic_score(gt, pred, 4, ignore_label=2) == pytest.approx(expected, abs=1e-12)


def test_semantic_score_edges():
    gt = np.full((4, 4), 255)
    assert semantic_score(gt, np.zeros((4, 4), int), 3) is None  # nothing labelled
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)|\(4, 5\).*\(4, 4\)"):
        semantic_score(np.zeros((4, 4), int), np.zeros((4, 5), int), 3)


def test_confusion_score_matches_the_parsing_miou():
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 50, (6, 6))
    confusion[3, :] = 0
    confusion[:, 3] = 0  # a class neither side has: left out
    assert confusion_score(confusion) == pytest.approx(semantic_metrics(confusion)["mIoU"])
    assert confusion_score(np.zeros((3, 3), int)) is None


def test_panoptic_score_is_the_image_pq():
    # rows TP, FP, FN, summed TP IoU; columns: 3 categories, the last one absent from the image
    stats = np.array([[2, 1, 0], [1, 0, 0], [0, 1, 0], [1.5, 0.9, 0]])
    expected = np.mean([1.5 / (2 + 0.5), 0.9 / (1 + 0.5)])  # eq. (1) per category
    assert panoptic_score(stats) == pytest.approx(expected, abs=1e-12)
    categories = [{"id": i, "isthing": 1} for i in range(3)]
    assert panoptic_score(stats) == pytest.approx(pq_from_stats(stats, categories)["All"]["pq"])
    assert panoptic_score(np.zeros((4, 3))) is None
