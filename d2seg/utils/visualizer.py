"""Draw model outputs on images with Detectron2's Visualizer."""

from __future__ import annotations

import numpy as np
from detectron2.data import Metadata
from detectron2.utils.visualizer import ColorMode, Visualizer


def draw_predictions(
    image_rgb: np.ndarray, outputs: dict, metadata: Metadata, score_threshold: float = 0.5
) -> np.ndarray:
    """Overlay one image's model outputs (panoptic, else instances, else semantic).

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
    elif "instances" in outputs:
        instances = outputs["instances"].to("cpu")
        drawn = visualizer.draw_instance_predictions(instances[instances.scores >= score_threshold])
    elif "sem_seg" in outputs:
        drawn = visualizer.draw_sem_seg(outputs["sem_seg"].argmax(dim=0).to("cpu"))
    else:
        raise KeyError(f"no panoptic_seg, instances or sem_seg in outputs: {sorted(outputs)}")
    return drawn.get_image()
