"""Regression targets of Mask Scoring R-CNN's MaskIoU head (Huang et al., CVPR 2019, sec. 3.3).

Pure functions, kept beside the head in `mask_scoring.py` that calls them.

For a positive RoI the target is the IoU between its binarised predicted mask and the whole
ground-truth object, measured on the M x M mask grid. The ground-truth mask target only covers
the part of the object inside the box, so the object's full area on that grid is recovered by
dividing the in-box area by the fraction of the object that lies inside the box (measured on
the full-resolution, augmented image). Object parts outside the box therefore still count in
the union, as in the authors' reference implementation.

A pixel is inside a box when its centre is: column j is inside [x0, x1) when x0 <= j + 0.5 < x1.
Polygons are rasterised on the same pixel grid as bitmasks (pycocotools, as Detectron2 does), so
both annotation formats give the same targets.
"""

from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import BitMasks, PolygonMasks


def _pixel_span(low: float, high: float, size: int) -> tuple[int, int]:
    """Indices [start, stop) of the pixels whose centres lie in [low, high), clipped to size."""
    start = min(max(math.ceil(low - 0.5), 0), size)
    stop = min(max(math.ceil(high - 0.5), start), size)
    return start, stop


def _polygon_inbox_fraction(
    polygons: list[np.ndarray], box: np.ndarray, height: int, width: int
) -> float:
    """In-box fraction of a polygon object, rasterised only over a window that holds it.

    The window starts a pixel before the polygon so that its shifted coordinates stay positive:
    pycocotools rounds negative coordinates towards zero, and an integer shift of positive ones
    rasterises exactly as the full image would.
    """
    points = np.concatenate([p.reshape(-1, 2) for p in polygons])
    x_start = min(max(math.floor(points[:, 0].min()) - 1, 0), width)
    y_start = min(max(math.floor(points[:, 1].min()) - 1, 0), height)
    x_stop = min(max(math.ceil(points[:, 0].max()) + 1, x_start), width)
    y_stop = min(max(math.ceil(points[:, 1].max()) + 1, y_start), height)
    if x_stop <= x_start or y_stop <= y_start:
        return 0.0
    shifted = [(p.reshape(-1, 2) - [x_start, y_start]).reshape(-1).tolist() for p in polygons]
    rles = mask_util.frPyObjects(shifted, y_stop - y_start, x_stop - x_start)
    window = mask_util.decode(mask_util.merge(rles)).astype(bool)
    full = window.sum()
    bx0, bx1 = _pixel_span(box[0], box[2], width)
    by0, by1 = _pixel_span(box[1], box[3], height)
    inside = window[
        max(by0 - y_start, 0) : max(by1 - y_start, 0), max(bx0 - x_start, 0) : max(bx1 - x_start, 0)
    ].sum()
    return float(inside) / float(full) if full else 0.0


def gt_inbox_fraction(
    gt_masks: BitMasks | PolygonMasks, boxes: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """Fraction of each ground-truth object's area that lies inside its RoI box.

    Args:
        gt_masks: R full-image masks, one per RoI (the RoI's matched ground truth).
        boxes: (R, 4) RoI boxes, XYXY in image pixels.
        image_size: (height, width) of the (augmented) image the masks live in.

    Returns:
        (R,) float tensor in [0, 1] on the boxes' device; 0 for empty masks.
    """
    height, width = image_size
    box_array = boxes.detach().cpu().numpy()
    fractions = []
    if isinstance(gt_masks, BitMasks):
        masks = gt_masks.tensor
        full_areas = masks.flatten(1).sum(dim=1).tolist()
        for mask, box, full in zip(masks, box_array, full_areas):
            x0, x1 = _pixel_span(box[0], box[2], width)
            y0, y1 = _pixel_span(box[1], box[3], height)
            inside = int(mask[y0:y1, x0:x1].sum())
            fractions.append(inside / full if full else 0.0)
    elif isinstance(gt_masks, PolygonMasks):
        for polygons, box in zip(gt_masks.polygons, box_array):
            fractions.append(_polygon_inbox_fraction(polygons, box, height, width))
    else:
        raise TypeError(f"gt_masks must be BitMasks or PolygonMasks, got {type(gt_masks)}")
    return torch.tensor(fractions, dtype=torch.float32, device=boxes.device)


def mask_iou_targets(
    pred_mask_logits: torch.Tensor, gt_mask_targets: torch.Tensor, inbox_fraction: torch.Tensor
) -> torch.Tensor:
    """IoU of each binarised predicted mask with its whole ground-truth object, on the mask grid.

    Args:
        pred_mask_logits: (R, M, M) mask logits of each RoI's target class.
        gt_mask_targets: (R, M, M) ground truth cropped to the RoI and resized (Mask R-CNN's
            mask target), bool or float in [0, 1].
        inbox_fraction: (R,) fraction of each object's area inside its RoI box.

    Returns:
        (R,) targets in [0, 1]; no gradient flows through them.
    """
    with torch.no_grad():
        predicted = (pred_mask_logits > 0).flatten(1).float()  # probability > 0.5
        target = (gt_mask_targets > 0.5).flatten(1).float()
        intersection = (predicted * target).sum(dim=1)
        gt_in_box = target.sum(dim=1)
        gt_full = torch.where(
            inbox_fraction > 0, gt_in_box / inbox_fraction.clamp(min=1e-6), gt_in_box
        )
        union = predicted.sum(dim=1) + gt_full - intersection
        return intersection / union.clamp(min=1.0)
