"""Training targets Parsing R-CNN (Yang et al., CVPR 2019) and its ParsingIoU re-scoring head
(RP R-CNN, Yang et al., 2020) compute from their own proposals: each RoI's part-label target,
cropped from its person's part map, and the parsing IoU a predicted part map reaches.

Pure functions, kept beside the head in `parsing.py` that calls them. The persons' part maps
they read are built by the dataset mapper (:class:`d2seg.data.targets.parsing.PersonPartMaps`).
"""

from __future__ import annotations

import torch


def crop_and_resize_part_maps(
    maps: torch.Tensor, person_index: torch.Tensor, boxes: torch.Tensor, side: int
) -> torch.Tensor:
    """Each RoI's target: its person's part map cropped to the RoI box and resized with nearest
    neighbour to side x side.

    As in the reference (soeaver/Parsing-R-CNN, `parsing_on_boxes`), the box is rounded to
    integer pixels (x0, y0, x1, y1) = round(box) and covers columns x0 .. x1 - 1, and output
    column j reads column x0 + floor(j * (x1 - x0) / side) (cv2's INTER_NEAREST rule; computed
    here in exact integers, where cv2's floating point is one pixel lower at a few exact
    multiples). A box narrower than a pixel counts as one pixel wide. Where the box leaves the
    image the target is background (0): the reference instead crops the part inside the image
    and stretches it over the whole grid, which shifts the target against the RoI features.

    Args:
        maps: (P, H, W) uint8 part ids of the image's persons.
        person_index: (R,) index into `maps` of each RoI's person.
        boxes: (R, 4) XYXY RoI boxes in the pixels of `maps`.
        side: output resolution (128 in the paper).

    Returns:
        (R, side, side) int64 part ids.
    """
    height, width = maps.shape[-2:]
    corners = torch.round(boxes.detach()).long()
    x0, y0, x1, y1 = corners.unbind(dim=1)
    steps = torch.arange(side, device=boxes.device)
    cols = x0[:, None] + (steps[None] * (x1 - x0).clamp(min=1)[:, None]) // side  # (R, side)
    rows = y0[:, None] + (steps[None] * (y1 - y0).clamp(min=1)[:, None]) // side
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None]
    values = maps[
        person_index.to(maps.device)[:, None, None],
        rows.clamp(0, height - 1).to(maps.device)[:, :, None],
        cols.clamp(0, width - 1).to(maps.device)[:, None, :],
    ]
    return torch.where(inside.to(maps.device), values, 0).long()


def check_part_ids(labels: torch.Tensor, num_classes: int, ignore_value: int) -> None:
    """Raise a ValueError naming the offending id if `labels` holds an id that is neither a part
    class (0..num_classes-1) nor `ignore_value`."""
    bad = labels[(labels >= num_classes) & (labels != ignore_value)]
    if bad.numel():
        raise ValueError(
            f"part id {int(bad.max())} in the targets, but the model has {num_classes} part "
            f"classes (MODEL.ROI_PARSING_HEAD.NUM_PARSING; ignore label {ignore_value})"
        )


def parsing_iou(
    pred_labels: torch.Tensor, gt_labels: torch.Tensor, num_classes: int, ignore_value: int = 255
) -> torch.Tensor:
    """Mean part IoU of each predicted part map with its target (the ParsingIoU head's target,
    RP R-CNN sec. 3.3; the reference's `cal_one_mean_iou` + `np.nanmean`).

    Per RoI, the IoU of every class 0..num_classes-1 (background included) is averaged over the
    classes present in the prediction or the target; pixels whose target is `ignore_value` are
    left out (the reference counts them into wrong bins). A RoI with no counted pixel gets 0.

    Args:
        pred_labels: (R, M, M) predicted part ids (argmax of the logits).
        gt_labels: (R, M, M) target part ids.
        num_classes: number of part classes, background included.
        ignore_value: target id that is not counted.

    Returns:
        (R,) float32 in [0, 1].

    Raises:
        ValueError: a target id that is neither a class nor `ignore_value`.
    """
    check_part_ids(gt_labels, num_classes, ignore_value)
    num_rois = len(pred_labels)
    pred = pred_labels.flatten(1).long()  # flatten, not reshape(R, -1): R may be 0
    gt = gt_labels.flatten(1).long()
    valid = gt != ignore_value
    roi = torch.arange(num_rois, device=pred.device)[:, None].expand_as(pred)
    flat = (roi * num_classes + pred) * num_classes + gt
    counts = torch.bincount(flat[valid], minlength=num_rois * num_classes**2)
    confusion = counts.reshape(num_rois, num_classes, num_classes).float()
    intersection = confusion.diagonal(dim1=1, dim2=2)
    union = confusion.sum(dim=2) + confusion.sum(dim=1) - intersection
    present = union > 0
    ious = torch.where(present, intersection / union.clamp(min=1), 0.0)
    return ious.sum(dim=1) / present.sum(dim=1).clamp(min=1)
