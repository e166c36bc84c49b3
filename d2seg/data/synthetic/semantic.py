"""Synthetic semantic segmentation, derived from the synthetic panoptic data.

Every pixel of a synthetic panoptic PNG gets the contiguous index of its category, things and
stuff alike (0..5 in the order of `SYNTHETIC_CATEGORIES`), and pixels on a border between two
segments get 255 (ignored), as PASCAL VOC marks object borders. The label PNGs are written under
``$DETECTRON2_DATASETS/d2seg_synthetic_sem_seg/sem_seg_{split}/`` beside nothing else: images
stay the synthetic dataset's. :mod:`d2seg.data.datasets.synthetic` registers them through
Detectron2's `load_sem_seg`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import cv2
import numpy as np
from panopticapi.utils import rgb2id

from d2seg.data.panoptic_utils import VOID_LABEL
from d2seg.data.synthetic import instance_panoptic
from d2seg.data.synthetic.engine import ensure_generated
from d2seg.utils.file_io import atomic_imwrite

GENERATOR_VERSION = 1
"""Bump when the derived labels change; stale copies on disk are regenerated."""

SYNTHETIC_SEM_SEG_DIRNAME = "d2seg_synthetic_sem_seg"


def segment_borders(segment_ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose 4-neighbour (up, down, left or right) is another segment."""
    border = np.zeros(segment_ids.shape, bool)
    vertical = segment_ids[1:, :] != segment_ids[:-1, :]
    horizontal = segment_ids[:, 1:] != segment_ids[:, :-1]
    border[1:, :] |= vertical
    border[:-1, :] |= vertical
    border[:, 1:] |= horizontal
    border[:, :-1] |= horizontal
    return border


def panoptic_to_semantic(segment_ids: np.ndarray, segments_info: list[dict]) -> np.ndarray:
    """(H, W) uint8 labels: contiguous category index per segment, 255 on segment borders and
    where no segment is."""
    index = {c["id"]: i for i, c in enumerate(instance_panoptic.SYNTHETIC_CATEGORIES)}
    labels = np.full(segment_ids.shape, VOID_LABEL, np.uint8)
    for segment in segments_info:
        labels[segment_ids == segment["id"]] = index[segment["category_id"]]
    labels[segment_borders(segment_ids)] = VOID_LABEL
    return labels


def _label_writer(synthetic_root: str) -> Callable[[str], None]:
    """Writes the labels of every split of the panoptic data at `synthetic_root` into a folder."""

    def write(root: str) -> None:
        for split in instance_panoptic.SYNTHETIC_SPLITS:
            with open(os.path.join(synthetic_root, "annotations", f"panoptic_{split}.json")) as f:
                annotations = json.load(f)["annotations"]
            os.makedirs(os.path.join(root, f"sem_seg_{split}"))
            for annotation in annotations:
                path = os.path.join(synthetic_root, f"panoptic_{split}", annotation["file_name"])
                segment_ids = rgb2id(cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1])
                labels = panoptic_to_semantic(segment_ids, annotation["segments_info"])
                target = os.path.join(root, f"sem_seg_{split}", annotation["file_name"])
                atomic_imwrite(target, labels)

    return write


def ensure_synthetic_sem_seg_dataset(datasets_root: str) -> str:
    """Generate the synthetic panoptic data, then its semantic labels, unless current copies
    exist. Returns the labels' folder."""
    synthetic_root = instance_panoptic.ensure_synthetic_dataset(datasets_root)
    manifest = {"generator_version": GENERATOR_VERSION, "panoptic": instance_panoptic.manifest()}
    return ensure_generated(
        datasets_root, SYNTHETIC_SEM_SEG_DIRNAME, manifest, _label_writer(synthetic_root)
    )
