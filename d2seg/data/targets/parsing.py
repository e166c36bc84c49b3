"""Training targets of Parsing R-CNN (Yang et al., CVPR 2019) and of its ParsingIoU re-scoring
head (RP R-CNN, Yang et al., 2020): per-RoI part-label targets, left/right part swapping for
horizontal flips, and the parsing IoU a predicted part map reaches.

A person's ground truth is an image-sized map of part ids (0 background). Persons of one image
are kept once, as a (P, H, W) uint8 tensor, and RoIs refer to them by index
(:class:`PersonPartMaps`), so matching hundreds of proposals to their persons copies nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
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


class PersonPartMaps:
    """`gt_parsing` of an `Instances`: the image's person part maps, (P, H, W) uint8, shared by
    every row, plus each row's person index. Indexing (as Detectron2 does when it matches
    proposals to ground truth) selects indices and never copies the maps."""

    def __init__(self, maps: torch.Tensor, person_index: torch.Tensor | None = None):
        """
        Args:
            maps: (P, H, W) uint8 part ids, one map per person.
            person_index: which person each row is (default: row i is person i).
        """
        if maps.dim() != 3 or maps.dtype != torch.uint8:
            raise ValueError(
                f"person part maps must be a (P, H, W) uint8 tensor, got {tuple(maps.shape)} "
                f"{maps.dtype}"
            )
        self.maps = maps
        if person_index is None:
            person_index = torch.arange(len(maps), device=maps.device)
        self.person_index = person_index

    def __len__(self) -> int:
        return len(self.person_index)

    def __getitem__(self, item) -> PersonPartMaps:
        selected = self.person_index[item]
        return PersonPartMaps(self.maps, selected.reshape(-1))

    def to(self, *args, **kwargs) -> PersonPartMaps:
        return PersonPartMaps(self.maps.to(*args, **kwargs), self.person_index.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.maps.device

    def crop_and_resize(self, boxes: torch.Tensor, side: int) -> torch.Tensor:
        """(R, side, side) int64 targets of the R rows in `boxes`; see
        :func:`crop_and_resize_part_maps`."""
        return crop_and_resize_part_maps(self.maps, self.person_index, boxes, side)


def flip_lookup(flip_pairs: Iterable[Sequence[int]]) -> np.ndarray:
    """A 256-entry uint8 table that swaps the part ids of each (left, right) pair and maps every
    other id (background, unpaired parts, the ignore label 255) to itself.

    Raises:
        ValueError: an id outside 1..254, a pair of one id, or an id in two pairs.
    """
    table = np.arange(256, dtype=np.uint8)
    seen: set[int] = set()
    for pair in flip_pairs:
        if len(pair) != 2:
            raise ValueError(f"parsing_flip_pairs: {pair!r} is not a (left, right) pair")
        left, right = (int(v) for v in pair)
        if left == right or not (0 < left < 255 and 0 < right < 255) or {left, right} & seen:
            raise ValueError(
                f"parsing_flip_pairs: bad pair {pair!r} (ids must be distinct, in 1..254 and in "
                f"one pair only)"
            )
        seen |= {left, right}
        table[left], table[right] = right, left
    return table


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
