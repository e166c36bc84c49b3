"""Cityscapes instance and semantic splits, built on the public `cityscapesscripts` package.

Detectron2's own Cityscapes loader imports an internal module path and fails in a public
install, so d2seg registers its own splits under new names:

- ``d2seg_cityscapes_fine_instance_seg_{train,val}``: instances from ``*_gtFine_instanceIds.png``
  (masks as RLE, so configs use ``INPUT.MASK_FORMAT bitmask``); label ids below 1000 of a class
  with instances are crowd regions.
- ``d2seg_cityscapes_fine_sem_seg_{train,val}``: ``*_gtFine_labelTrainIds.png``, which
  ``datasets/prepare_cityscapes.py`` creates.
- ``d2seg_cityscapes_fine_panoptic_{train,val}``: the COCO-format panoptic PNGs + json that
  cityscapesscripts' createPanopticImgs writes (also via ``datasets/prepare_cityscapes.py``),
  read with Detectron2's own panoptic loader; classes are the 19 train ids.
"""

from __future__ import annotations

import glob
import os
from functools import partial
from multiprocessing import Pool

import numpy as np
import pycocotools.mask as mask_util
from cityscapesscripts.helpers.labels import labels
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic
from detectron2.structures import BoxMode
from PIL import Image

from d2seg.data.panoptic_utils import standard_panoptic_metadata

CITYSCAPES_THING_LABELS = [
    label for label in labels if label.hasInstances and not label.ignoreInEval
]
CITYSCAPES_STUFF_LABELS = sorted(
    (label for label in labels if 0 <= label.trainId < 255), key=lambda label: label.trainId
)

_SPLITS = {
    "train": ("cityscapes/leftImg8bit/train/", "cityscapes/gtFine/train/"),
    "val": ("cityscapes/leftImg8bit/val/", "cityscapes/gtFine/val/"),
}
_IMAGE_SUFFIX = "_leftImg8bit.png"


def cityscapes_files(image_dir: str, gt_dir: str, gt_suffix: str) -> list[tuple[str, str]]:
    """(image, ground-truth) file pairs of a split, sorted; errors name the missing path."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"Cityscapes images not found at {image_dir!r}. Put Cityscapes under "
            "$DETECTRON2_DATASETS/cityscapes/ (DETECTRON2_DATASETS is read from the environment, "
            "default ./datasets); see datasets/README.md."
        )
    pairs = []
    for image_file in sorted(glob.glob(os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX))):
        city = os.path.basename(os.path.dirname(image_file))
        stem = os.path.basename(image_file)[: -len(_IMAGE_SUFFIX)]
        gt_file = os.path.join(gt_dir, city, f"{stem}_{gt_suffix}")
        if not os.path.isfile(gt_file):
            raise FileNotFoundError(
                f"Cityscapes ground truth {gt_file!r} is missing for image {image_file!r}"
                + (
                    " (run datasets/prepare_cityscapes.py to create it)"
                    if "TrainIds" in gt_suffix
                    else ""
                )
            )
        pairs.append((image_file, gt_file))
    if not pairs:
        raise FileNotFoundError(f"no *{_IMAGE_SUFFIX} images under {image_dir!r}")
    return pairs


def _instance_record(files: tuple[str, str]) -> dict:
    image_file, instance_file = files
    instance_ids = np.asarray(Image.open(instance_file))
    contiguous = {label.id: i for i, label in enumerate(CITYSCAPES_THING_LABELS)}
    annotations = []
    for segment_id in np.unique(instance_ids):
        label_id = int(segment_id) // 1000 if segment_id >= 1000 else int(segment_id)
        if label_id not in contiguous:
            continue
        mask = np.asfortranarray((instance_ids == segment_id).astype(np.uint8))
        rle = mask_util.encode(mask)
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "category_id": contiguous[label_id],
                "iscrowd": int(segment_id < 1000),
                "bbox": mask_util.toBbox(rle).tolist(),
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": rle,
            }
        )
    height, width = instance_ids.shape
    return {
        "file_name": image_file,
        "image_id": os.path.basename(image_file)[: -len(_IMAGE_SUFFIX)],
        "height": height,
        "width": width,
        "annotations": annotations,
    }


def load_cityscapes_instances(image_dir: str, gt_dir: str) -> list[dict]:
    """Detectron2 dataset dicts with one RLE-masked annotation per instance id."""
    files = cityscapes_files(image_dir, gt_dir, "gtFine_instanceIds.png")
    if len(files) < 16:
        return [_instance_record(f) for f in files]
    with Pool(processes=max(os.cpu_count() // 2, 1)) as pool:
        return pool.map(_instance_record, files, chunksize=4)


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> list[dict]:
    """Detectron2 semantic dataset dicts pointing at ``*_gtFine_labelTrainIds.png``."""
    records = []
    for image_file, label_file in cityscapes_files(image_dir, gt_dir, "gtFine_labelTrainIds.png"):
        width, height = Image.open(label_file).size
        records.append(
            {
                "file_name": image_file,
                "sem_seg_file_name": label_file,
                "height": height,
                "width": width,
            }
        )
    return records


def cityscapes_panoptic_metadata() -> dict:
    """Panoptic metadata over the 19 train ids: thing/stuff label ids -> train ids (the labels
    are sorted by train id, so the contiguous ids of the standard registration are train ids)."""
    return standard_panoptic_metadata(
        {"id": label.id, "name": label.name, "color": label.color, "isthing": label.hasInstances}
        for label in CITYSCAPES_STUFF_LABELS
    )


def load_cityscapes_panoptic_split(
    image_dir: str, gt_dir: str, panoptic_root: str, panoptic_json: str
) -> list[dict]:
    """Detectron2's Cityscapes panoptic loader, after checking that its inputs exist."""
    cityscapes_files(image_dir, gt_dir, "gtFine_instanceIds.png")  # names a missing root
    if not os.path.isfile(panoptic_json):
        raise FileNotFoundError(
            f"{panoptic_json!r} is missing: run "
            "datasets/prepare_cityscapes.py (see datasets/README.md)"
        )
    return load_cityscapes_panoptic(
        image_dir, panoptic_root, panoptic_json, cityscapes_panoptic_metadata()
    )


def register_all_cityscapes(datasets_root: str) -> None:
    """Register d2seg's Cityscapes instance and semantic splits under `datasets_root`."""
    for split, (image_subdir, gt_subdir) in _SPLITS.items():
        image_dir = os.path.join(datasets_root, image_subdir)
        gt_dir = os.path.join(datasets_root, gt_subdir)

        name = f"d2seg_cityscapes_fine_instance_seg_{split}"
        DatasetCatalog.register(name, partial(load_cityscapes_instances, image_dir, gt_dir))
        MetadataCatalog.get(name).set(
            image_dir=image_dir,
            gt_dir=gt_dir,
            evaluator_type="cityscapes_instance",
            thing_classes=[label.name for label in CITYSCAPES_THING_LABELS],
            thing_colors=[label.color for label in CITYSCAPES_THING_LABELS],
            thing_dataset_id_to_contiguous_id={
                label.id: i for i, label in enumerate(CITYSCAPES_THING_LABELS)
            },
        )

        name = f"d2seg_cityscapes_fine_sem_seg_{split}"
        DatasetCatalog.register(name, partial(load_cityscapes_semantic, image_dir, gt_dir))
        MetadataCatalog.get(name).set(
            image_dir=image_dir,
            gt_dir=gt_dir,
            evaluator_type="cityscapes_sem_seg",
            ignore_label=255,
            stuff_classes=[label.name for label in CITYSCAPES_STUFF_LABELS],
            stuff_colors=[label.color for label in CITYSCAPES_STUFF_LABELS],
        )

        name = f"d2seg_cityscapes_fine_panoptic_{split}"
        panoptic_root = os.path.join(
            datasets_root, "cityscapes", "gtFine", f"cityscapes_panoptic_{split}"
        )
        panoptic_json = panoptic_root + ".json"
        DatasetCatalog.register(
            name,
            partial(
                load_cityscapes_panoptic_split, image_dir, gt_dir, panoptic_root, panoptic_json
            ),
        )
        MetadataCatalog.get(name).set(
            image_dir=image_dir,
            gt_dir=gt_dir,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            evaluator_type="cityscapes_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **cityscapes_panoptic_metadata(),
        )


def train_id_to_label_id() -> np.ndarray:
    """Lookup table from Cityscapes trainId (0..18, 255) to the official label id."""
    table = np.zeros(256, np.uint8)
    for label in CITYSCAPES_STUFF_LABELS:
        table[label.trainId] = label.id
    return table
