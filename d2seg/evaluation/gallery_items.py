"""What the evaluators hand the report's gallery for one image: its score (from
:mod:`d2seg.evaluation.per_image_scores`) and a picklable drawing of prediction and ground
truth (:class:`~d2seg.evaluation.report.protocol.GalleryDrawing`).

Each ``*_gallery_item(record, output, dataset_name)`` returns (score, function making the
drawing), or None when the image cannot be scored; it is the `score_image` argument of
:meth:`~d2seg.evaluation.report.protocol.ReportSource.score_images`. Drawings keep only what
they draw: outputs on the CPU, instances below the drawing threshold dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.data import Metadata, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from d2seg.evaluation.per_image_scores import CONFIDENT_SCORE, instance_score, semantic_score
from d2seg.evaluation.report.protocol import GalleryDrawing
from d2seg.utils.visualizer import draw_predictions

GalleryItem = tuple[float, Callable[[], GalleryDrawing]]


def draw_labels(image: np.ndarray, labels: np.ndarray, metadata: Metadata) -> np.ndarray:
    """A label map in the metadata's stuff colours (ids without a class are not drawn)."""
    return Visualizer(image, metadata).draw_sem_seg(torch.as_tensor(labels)).get_image()


def draw_record(image: np.ndarray, record: dict, metadata: Metadata) -> np.ndarray:
    """A dataset record's annotations (instances, semantic or panoptic labels) over `image`."""
    if "segments_info" in record:  # Detectron2's Cityscapes panoptic loader has no isthing
        things = set(metadata.get("thing_dataset_id_to_contiguous_id", {}).values())
        segments = [{"isthing": s["category_id"] in things, **s} for s in record["segments_info"]]
        record = {**record, "segments_info": segments}
    return Visualizer(image, metadata).draw_dataset_dict(record).get_image()


@dataclass(frozen=True)
class OutputsDrawing:
    """Model outputs (``instances`` / ``panoptic_seg``) beside the record's annotations."""

    dataset_name: str
    outputs: dict
    record: dict

    def draw_prediction(self, image: np.ndarray) -> np.ndarray:
        metadata = MetadataCatalog.get(self.dataset_name)
        return draw_predictions(image, self.outputs, metadata, CONFIDENT_SCORE)

    def draw_ground_truth(self, image: np.ndarray) -> np.ndarray:
        return draw_record(image, self.record, MetadataCatalog.get(self.dataset_name))


@dataclass(frozen=True)
class LabelMapDrawing:
    """A predicted label map beside the record's annotations, in the stuff colours."""

    dataset_name: str
    labels: np.ndarray
    record: dict

    def draw_prediction(self, image: np.ndarray) -> np.ndarray:
        return draw_labels(image, self.labels, MetadataCatalog.get(self.dataset_name))

    def draw_ground_truth(self, image: np.ndarray) -> np.ndarray:
        return draw_record(image, self.record, MetadataCatalog.get(self.dataset_name))


def confident_instances(output: Mapping, score_field: str = "scores") -> dict:
    """The output's instances on the CPU, those the overlay would not draw dropped."""
    instances = output["instances"].to("cpu")
    scores = instances.get(score_field) if instances.has(score_field) else instances.scores
    return {"instances": instances[scores >= CONFIDENT_SCORE]}


def record_instance_score(record: dict, output: Mapping) -> float | None:
    """:func:`instance_score` of the output's instances against the record's non-crowd
    annotations (masks where both sides have them)."""
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    instances = output["instances"].to("cpu")
    if not annotations or not (instances.scores >= CONFIDENT_SCORE).any():
        return 0.0 if annotations else None  # instance_score's answer, without the masks
    size = (instances.image_size[0], instances.image_size[1])
    with_masks = all("segmentation" in a for a in annotations)
    if not with_masks:
        annotations = [{k: v for k, v in a.items() if k != "segmentation"} for a in annotations]
    gt = annotations_to_instances(annotations, size, mask_format="bitmask")
    use_masks = with_masks and instances.has("pred_masks")
    return instance_score(
        gt.gt_boxes.tensor.numpy(),
        instances.pred_boxes.tensor.numpy(),
        instances.scores.numpy(),
        gt.gt_masks.tensor.numpy() if use_masks else None,
        instances.pred_masks.numpy() if use_masks else None,
    )


def instance_gallery_item(record: dict, output: Mapping, dataset_name: str) -> GalleryItem | None:
    """The instance score of an image with annotations and predicted ``instances``."""
    if "instances" not in output or "annotations" not in record:
        return None
    score = record_instance_score(record, output)
    if score is None:
        return None
    return score, lambda: OutputsDrawing(dataset_name, confident_instances(output), record)


def semantic_gallery_item(record: dict, output: Mapping, dataset_name: str) -> GalleryItem | None:
    """The mIoU of the predicted ``sem_seg`` against the record's ``sem_seg_file_name``."""
    if "sem_seg" not in output or "sem_seg_file_name" not in record:
        return None
    metadata = MetadataCatalog.get(dataset_name)
    labels = output["sem_seg"].argmax(dim=0).to("cpu").numpy()
    with Image.open(record["sem_seg_file_name"]) as image:
        gt = np.asarray(image)
    classes = len(metadata.stuff_classes)
    score = semantic_score(gt, labels, classes, metadata.get("ignore_label", 255))
    if score is None:
        return None
    return score, lambda: LabelMapDrawing(dataset_name, labels.astype(np.int32), record)
