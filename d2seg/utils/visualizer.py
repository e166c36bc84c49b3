"""Draw model outputs on images with Detectron2's Visualizer."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer


def draw_predictions(
    image_rgb: np.ndarray, outputs: dict, metadata: Metadata, score_threshold: float = 0.5
) -> np.ndarray:
    """Overlay one image's model outputs (panoptic, else instances, else semantic); instances
    with `pred_parsing` are drawn as part maps (:func:`draw_parsing`).

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        outputs: a model's output dict for this image (`panoptic_seg`, `instances`, `sem_seg`).
        metadata: the dataset metadata that names the classes.
        score_threshold: instances scoring below this are not drawn.

    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    if "panoptic_seg" in outputs:
        panoptic_seg, segments_info = outputs["panoptic_seg"]
        drawn = visualizer.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info)
    elif "instances" in outputs and outputs["instances"].has("pred_parsing"):
        return draw_parsing(image_rgb, outputs["instances"], metadata, score_threshold)
    elif "instances" in outputs:
        instances = outputs["instances"].to("cpu")
        drawn = visualizer.draw_instance_predictions(instances[instances.scores >= score_threshold])
    elif "sem_seg" in outputs:
        drawn = visualizer.draw_sem_seg(outputs["sem_seg"].argmax(dim=0).to("cpu"))
    else:
        raise KeyError(f"no panoptic_seg, instances or sem_seg in outputs: {sorted(outputs)}")
    return drawn.get_image()


def draw_parsing(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata: Metadata,
    score_threshold: float = 0.5,
    alpha: float = 0.6,
) -> np.ndarray:
    """Draw each person's part map in the dataset palette, then the person boxes and scores.

    Persons whose `parsing_scores` (else `scores`) reach `score_threshold` are pasted (see
    `PartProbabilities.label_crops`) and painted in ascending score, so that where two overlap
    the more confident one shows; part pixels are blended with the image at `alpha`.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image the instances were predicted at.
        instances: a parsing model's `instances` (`pred_parsing`, `pred_boxes`, `scores`).
        metadata: dataset metadata with `parsing_colors` (one RGB triple per part id).
        score_threshold: persons below it are not drawn.
        alpha: opacity of the part colours.

    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    colors = metadata.get("parsing_colors")
    if colors is None:
        raise KeyError(f"metadata of {metadata.name!r} has no parsing_colors to draw parts with")
    instances = instances.to("cpu")
    scores = instances.parsing_scores if instances.has("parsing_scores") else instances.scores
    instances = instances[scores >= score_threshold]
    scores = scores[scores >= score_threshold]
    crops = instances.pred_parsing.label_crops(instances.pred_boxes.tensor, instances.image_size)
    labels = np.zeros(image_rgb.shape[:2], dtype=np.int64)
    for index in torch.argsort(scores, stable=True).tolist():
        x0, y0, crop = crops[index]
        region = labels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
        parts = crop.numpy() > 0
        region[parts] = crop.numpy()[parts]
    palette = np.asarray(colors, dtype=np.float64)
    if labels.max() >= len(palette):
        raise ValueError(
            f"part id {labels.max()} predicted but {metadata.name!r} has {len(palette)} "
            f"parsing_colors"
        )
    blended = image_rgb.astype(np.float64)
    parts = labels > 0
    blended[parts] = (1 - alpha) * blended[parts] + alpha * palette[labels[parts]]
    visualizer = Visualizer(blended.round().astype(np.uint8), metadata)
    boxes_only = Instances(instances.image_size, pred_boxes=instances.pred_boxes, scores=scores)
    if instances.has("pred_classes"):
        boxes_only.pred_classes = instances.pred_classes
    return visualizer.draw_instance_predictions(boxes_only).get_image()
