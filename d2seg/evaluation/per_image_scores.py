"""Cheap per-image scores that rank a run's images for the report's best / worst gallery.

One score per task, each in [0, 1] and each named on the page (:data:`SCORE_NAMES`):

- **instance**: the mean over the image's non-crowd ground-truth objects of the best mask IoU
  (box IoU when either side has no masks) with any prediction scoring >= 0.5
  (:data:`CONFIDENT_SCORE`, the overlays' default threshold); an object no confident prediction
  touches scores 0;
- **panoptic**: the image's own PQ, from its (4, C) TP / FP / FN / summed-IoU statistics as
  :func:`d2seg.evaluation.panoptic_evaluation.image_pq_stats` counts them (eq. 1 of Kirillov
  et al., CVPR 2019, averaged over the categories the image has on either side);
- **semantic** and **parsing**: the image's mIoU (parsing: mean part IoU, background
  included), averaged over the classes present in its ground truth or its prediction, ignored
  pixels left out.

An image without anything to score (no ground-truth object, no labelled pixel, no segment)
gets None and stays out of the gallery.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util

CONFIDENT_SCORE = 0.5
"""Predictions scoring >= this count for the instance score (draw_predictions' default)."""
SCORE_NAMES = {
    "instance": "mean over ground-truth objects of the best mask IoU (box IoU without masks) "
    f"with a prediction scoring >= {CONFIDENT_SCORE}",
    "panoptic": "the image's PQ (over the categories it has in ground truth or prediction)",
    "semantic": "the image's mIoU (over the classes in its ground truth or prediction)",
    "parsing": "the image's mean part IoU, background included (over the parts in its ground "
    "truth or prediction)",
}


def _rles(masks: np.ndarray) -> list[dict]:
    return mask_util.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))


def instance_score(
    gt_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    gt_masks: np.ndarray | None = None,
    pred_masks: np.ndarray | None = None,
) -> float | None:
    """Mean best IoU of the ground-truth objects (module docstring).

    Args:
        gt_boxes, pred_boxes: (G, 4) and (N, 4) XYXY boxes of the non-crowd objects.
        pred_scores: (N,) prediction confidences.
        gt_masks, pred_masks: (G, H, W) and (N, H, W) boolean masks; box IoU when either is
            None.
    """
    if len(gt_boxes) == 0:
        return None
    confident = np.asarray(pred_scores) >= CONFIDENT_SCORE
    if not confident.any():
        return 0.0
    if gt_masks is not None and pred_masks is not None:
        iou = mask_util.iou(
            _rles(np.asarray(pred_masks)[confident]),
            _rles(np.asarray(gt_masks)),
            [0] * len(gt_boxes),
        )
    else:
        boxes = [np.asarray(b, np.float64) for b in (pred_boxes, gt_boxes)]
        xywh = [np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]]) for b in boxes]
        iou = mask_util.iou(xywh[0][confident], xywh[1], [0] * len(gt_boxes))
    return float(np.asarray(iou).reshape(int(confident.sum()), len(gt_boxes)).max(axis=0).mean())


def confusion_score(confusion: np.ndarray) -> float | None:
    """mIoU of a (C, C) confusion matrix over the classes either side has."""
    diagonal = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - diagonal
    present = union > 0
    return float((diagonal[present] / union[present]).mean()) if present.any() else None


def semantic_score(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int = 255
) -> float | None:
    """The image's mIoU (module docstring): ground-truth labels equal to `ignore_label` or
    outside [0, num_classes) are left out."""
    if gt.shape != pred.shape:
        raise ValueError(f"prediction is {pred.shape}, ground truth {gt.shape}")
    valid = (gt != ignore_label) & (gt >= 0) & (gt < num_classes)
    pairs = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    confusion = np.bincount(pairs, minlength=num_classes**2)[: num_classes**2]
    return confusion_score(confusion.reshape(num_classes, num_classes))


def panoptic_score(stats: np.ndarray) -> float | None:
    """PQ of one image from its (4, C) rows TP, FP, FN and summed TP IoU."""
    tp, fp, fn, iou = np.asarray(stats, np.float64)
    present = tp + fp + fn > 0
    if not present.any():
        return None
    return float((iou[present] / (tp + 0.5 * fp + 0.5 * fn)[present]).mean())
