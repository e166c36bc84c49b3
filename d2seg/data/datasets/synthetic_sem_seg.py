"""Built-in synthetic semantic segmentation, derived from the synthetic panoptic data.

Every pixel of a synthetic panoptic PNG gets the contiguous index of its category, things and
stuff alike (0..5 in the order of `SYNTHETIC_CATEGORIES`), and pixels on a border between two
segments get 255 (ignored), as PASCAL VOC marks object borders. The label PNGs are written under
``$DETECTRON2_DATASETS/d2seg_synthetic_sem_seg/sem_seg_{split}/`` beside nothing else: images
stay the synthetic dataset's. Registered as ``d2seg_synthetic_sem_seg_{train,val}`` with
``evaluator_type`` "sem_seg" through Detectron2's `load_sem_seg`, generated on first use.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from panopticapi.utils import rgb2id

from d2seg.data.datasets.generated import ensure_generated
from d2seg.data.datasets.synthetic import (
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_DIRNAME,
    SYNTHETIC_SPLITS,
    _manifest,
    ensure_synthetic_dataset,
)
from d2seg.data.panoptic_utils import VOID_LABEL
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
    index = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    labels = np.full(segment_ids.shape, VOID_LABEL, np.uint8)
    for segment in segments_info:
        labels[segment_ids == segment["id"]] = index[segment["category_id"]]
    labels[segment_borders(segment_ids)] = VOID_LABEL
    return labels


def _writer(synthetic_root: str):
    def write(root: str) -> None:
        for split in SYNTHETIC_SPLITS:
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
    """Generate the synthetic data, then its semantic labels, unless current copies exist."""
    synthetic_root = ensure_synthetic_dataset(datasets_root)
    manifest = {"generator_version": GENERATOR_VERSION, "panoptic": _manifest()}
    return ensure_generated(
        datasets_root, SYNTHETIC_SEM_SEG_DIRNAME, manifest, _writer(synthetic_root)
    )


def _load(datasets_root: str, split: str) -> list[dict]:
    root = ensure_synthetic_sem_seg_dataset(datasets_root)
    image_root = os.path.join(datasets_root, SYNTHETIC_DIRNAME, split)
    return load_sem_seg(os.path.join(root, f"sem_seg_{split}"), image_root, "png", "jpg")


def register_all_synthetic_sem_seg(datasets_root: str) -> None:
    """Register ``d2seg_synthetic_sem_seg_{train,val}`` (generated when first loaded)."""
    root = os.path.join(datasets_root, SYNTHETIC_SEM_SEG_DIRNAME)
    for split in SYNTHETIC_SPLITS:
        name = f"d2seg_synthetic_sem_seg_{split}"
        DatasetCatalog.register(name, lambda split=split: _load(datasets_root, split))
        MetadataCatalog.get(name).set(
            image_root=os.path.join(datasets_root, SYNTHETIC_DIRNAME, split),
            sem_seg_root=os.path.join(root, f"sem_seg_{split}"),
            evaluator_type="sem_seg",
            ignore_label=VOID_LABEL,
            stuff_classes=[c["name"] for c in SYNTHETIC_CATEGORIES],
            stuff_colors=[list(c["color"]) for c in SYNTHETIC_CATEGORIES],
        )
