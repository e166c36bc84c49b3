"""Turn Detectron2 dataset records into model-style outputs, to feed evaluators ground truth."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.structures import Instances
from panopticapi.utils import rgb2id
from PIL import Image


def instances_from_record(record: dict) -> Instances:
    """The record's non-crowd annotations as predicted instances with score 1."""
    annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    image_size = (record["height"], record["width"])
    gt = annotations_to_instances(annotations, image_size, mask_format="bitmask")
    predicted = Instances(image_size)
    predicted.pred_boxes = gt.gt_boxes
    predicted.pred_classes = gt.gt_classes
    predicted.pred_masks = gt.gt_masks.tensor
    predicted.scores = torch.ones(len(gt))
    return predicted


def panoptic_from_record(record: dict) -> tuple[torch.Tensor, list[dict]]:
    """The record's panoptic PNG as a (segment ids, segments_info) prediction."""
    ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
    segments_info = [
        {"id": s["id"], "category_id": s["category_id"], "isthing": bool(s["isthing"])}
        for s in record["segments_info"]
    ]
    return torch.from_numpy(ids.astype(np.int32)), segments_info
