"""Built-in synthetic dataset: seeded shape scenes written to disk in the real COCO formats.

Every image shows a few "stuff" regions (sky / grass / sand, each with its own texture) and
several "thing" shapes (circle / triangle / square, each with its own colour family) at varied
scales, rotations and depths, so that objects occlude each other. Some images also hold a
crowd: a cluster of small shapes annotated as one `iscrowd=1` region.

The generator writes, under ``$DETECTRON2_DATASETS/d2seg_synthetic/``:

- ``{split}/*.jpg``                         images
- ``annotations/instances_{split}.json``    COCO instances; unoccluded objects as polygons,
                                            occluded objects and crowds as compressed RLE
- ``annotations/panoptic_{split}.json``     COCO panoptic json (things and stuff)
- ``panoptic_{split}/*.png``                COCO panoptic PNGs (id = R + 256 G + 256^2 B)
- ``panoptic_stuff_{split}/*.png``          semantic PNGs for Panoptic FPN (things 0, stuff 1..N)

and registers them under the names in :data:`SYNTHETIC_SPLITS` through Detectron2's own COCO
loaders, so the same mappers and evaluators run on it as on COCO.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json, merge_to_panoptic
from panopticapi.utils import id2rgb

from d2seg.data.panoptic_utils import (
    panoptic_to_stuff_semantic,
    separated_panoptic_metadata,
    standard_panoptic_metadata,
    thing_metadata,
)
from d2seg.utils.file_io import atomic_imwrite, atomic_json_dump

GENERATOR_VERSION = 1
"""Bump when the generated content changes; stale copies on disk are regenerated."""

SYNTHETIC_DIRNAME = "d2seg_synthetic"

SYNTHETIC_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 50, 50]},
    {"id": 2, "name": "triangle", "isthing": 1, "color": [40, 190, 60]},
    {"id": 3, "name": "square", "isthing": 1, "color": [50, 80, 230]},
    {"id": 4, "name": "sky", "isthing": 0, "color": [170, 190, 205]},
    {"id": 5, "name": "grass", "isthing": 0, "color": [110, 135, 80]},
    {"id": 6, "name": "sand", "isthing": 0, "color": [195, 175, 130]},
]
THING_CATEGORIES = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
STUFF_CATEGORIES = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]


@dataclass(frozen=True)
class SyntheticSplit:
    num_images: int
    seed: int


SYNTHETIC_SPLITS = {
    "train": SyntheticSplit(num_images=320, seed=0),
    "val": SyntheticSplit(num_images=48, seed=1),
}

# Scene parameters. Sizes are in pixels of an image whose sides are drawn from IMAGE_SIDE_RANGE.
IMAGE_SIDE_RANGE = (224, 320)
OBJECTS_PER_IMAGE = (2, 7)  # [low, high) objects drawn per image, before occlusion filtering
OBJECT_SIZE_RANGE = (18.0, 96.0)  # object diameter; log-uniform so small objects are common
MIN_VISIBLE_FRACTION = 0.35  # objects hidden more than this by others are not drawn at all
MIN_VISIBLE_PIXELS = 40
CROWD_PROBABILITY = 0.15
CIRCLE_VERTICES = 32


def _stuff_layout(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Index into STUFF_CATEGORIES per pixel: sky above a wavy horizon, grass/sand below."""
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    horizon = rng.uniform(0.25, 0.6) * height + rng.uniform(4, 16) * np.sin(
        2 * np.pi * xs / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi)
    )
    layout = np.where(ys < horizon, 0, 1).astype(np.uint8)
    ground_mode = rng.integers(3)  # 0: grass only, 1: sand only, 2: both, split by a wavy line
    if ground_mode == 1:
        layout[layout == 1] = 2
    elif ground_mode == 2:
        border = rng.uniform(0.25, 0.75) * width + rng.uniform(4, 20) * np.sin(
            2 * np.pi * ys / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi)
        )
        layout[(layout == 1) & (xs >= border)] = 2
    return layout


def _texture(rng: np.random.Generator, height: int, width: int, color) -> np.ndarray:
    """A float (H, W, 3) texture: colour jitter, oriented stripes and per-pixel noise."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / rng.uniform(6, 24))
    base = np.asarray(color, np.float32) + rng.uniform(-15, 15, size=3)
    texture = base + rng.uniform(6, 18) * stripes[..., None]
    return texture + rng.normal(0, 6, size=(height, width, 3))


def _shape_polygon(rng: np.random.Generator, name: str, cx: float, cy: float, size: float):
    """Polygon (flat x, y list) of a shape of the given class, diameter `size`, random rotation."""
    if name == "circle":
        angles = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        radius = size / 2
    elif name == "triangle":
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        radius = size / 2 * 1.15
    elif name == "square":
        angles = rng.uniform(0, np.pi / 2) + np.array([1, 3, 5, 7]) * np.pi / 4
        radius = size / 2 * 1.1
    else:
        raise ValueError(f"unknown synthetic shape class {name!r}")
    points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    return points.reshape(-1).round(2).tolist()


def _polygons_to_rle(polygons, height: int, width: int) -> dict:
    return mask_util.merge(mask_util.frPyObjects(polygons, height, width))


def _sample_objects(rng: np.random.Generator, height: int, width: int) -> list[dict]:
    """Objects bottom to top, each with its category, polygons, full mask and crowd flag."""
    objects = []
    for _ in range(rng.integers(*OBJECTS_PER_IMAGE)):
        category = THING_CATEGORIES[rng.integers(len(THING_CATEGORIES))]
        size = float(np.exp(rng.uniform(*np.log(OBJECT_SIZE_RANGE))))
        margin = size / 2
        cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
        polygons = [_shape_polygon(rng, category["name"], cx, cy, size)]
        objects.append({"category": category, "polygons": polygons, "iscrowd": 0})
    if rng.random() < CROWD_PROBABILITY:
        category = THING_CATEGORIES[rng.integers(len(THING_CATEGORIES))]
        cx, cy = rng.uniform(30, width - 30), rng.uniform(30, height - 30)
        polygons = [
            _shape_polygon(
                rng,
                category["name"],
                cx + rng.uniform(-24, 24),
                cy + rng.uniform(-24, 24),
                rng.uniform(6, 11),
            )
            for _ in range(rng.integers(6, 11))
        ]
        objects.insert(
            rng.integers(len(objects) + 1),
            {
                "category": category,
                "polygons": polygons,
                "iscrowd": 1,
            },
        )
    for obj in objects:
        obj["full_mask"] = mask_util.decode(_polygons_to_rle(obj["polygons"], height, width))
    return objects


def _keep_visible(objects: list[dict]) -> list[dict]:
    """Drop objects mostly hidden by those above them; set each kept one's visible mask.

    Walks from the top: dropping an object never changes what is visible of the objects above.
    """
    kept = []
    covered = np.zeros_like(objects[0]["full_mask"]) if objects else None
    for obj in reversed(objects):
        visible = obj["full_mask"] & ~covered
        area = int(visible.sum())
        if area < MIN_VISIBLE_PIXELS or area < MIN_VISIBLE_FRACTION * obj["full_mask"].sum():
            continue
        obj["visible_mask"] = visible
        covered |= obj["full_mask"]
        kept.append(obj)
    return kept[::-1]


def render_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draw one scene.

    Returns:
        image: (H, W, 3) uint8 RGB.
        stuff_layout: (H, W) index into STUFF_CATEGORIES.
        objects: visible objects bottom to top, with "category", "polygons", "iscrowd",
            "full_mask" and "visible_mask".
    """
    height, width = (int(v) for v in rng.integers(*IMAGE_SIDE_RANGE, size=2))
    layout = _stuff_layout(rng, height, width)
    canvas = np.zeros((height, width, 3), np.float32)
    for index, category in enumerate(STUFF_CATEGORIES):
        region = layout == index
        canvas[region] = _texture(rng, height, width, category["color"])[region]
    objects = _keep_visible(_sample_objects(rng, height, width))
    for obj in objects:
        x0, y0, w, h = (int(v) for v in cv2.boundingRect(obj["visible_mask"]))
        region = obj["visible_mask"][y0 : y0 + h, x0 : x0 + w].astype(bool)
        shading = _texture(rng, h, w, obj["category"]["color"])
        canvas[y0 : y0 + h, x0 : x0 + w][region] = shading[region]
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return image, layout, objects


def _instance_annotation(obj: dict, height: int, width: int) -> dict:
    """COCO annotation of an object's visible region: polygons when it is whole, RLE otherwise."""
    whole = not obj["iscrowd"] and np.array_equal(obj["visible_mask"], obj["full_mask"])
    if whole:
        segmentation = obj["polygons"]
        rle = _polygons_to_rle(segmentation, height, width)
    else:
        rle = mask_util.encode(np.asfortranarray(obj["visible_mask"]))
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return {
        "category_id": obj["category"]["id"],
        "segmentation": segmentation,
        "area": float(mask_util.area(rle)),
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
        "iscrowd": int(obj["iscrowd"]),
    }


def _panoptic_segments(layout: np.ndarray, objects: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Segment id map and `segments_info`: one segment per object, one per stuff region."""
    segment_ids = np.zeros(layout.shape, np.int32)
    segments_info = []
    regions = [(obj["category"]["id"], obj["iscrowd"], obj["visible_mask"]) for obj in objects]
    things = np.zeros(layout.shape, bool)
    for obj in objects:
        things |= obj["visible_mask"].astype(bool)
    for index, category in enumerate(STUFF_CATEGORIES):
        regions.append((category["id"], 0, (layout == index) & ~things))
    for category_id, iscrowd, mask in regions:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        area = int(mask_util.area(rle))
        if area == 0:
            continue
        segment_id = len(segments_info) + 1
        segment_ids[mask.astype(bool)] = segment_id
        segments_info.append(
            {
                "id": segment_id,
                "category_id": category_id,
                "iscrowd": int(iscrowd),
                "area": area,
                "bbox": [int(v) for v in mask_util.toBbox(rle)],
            }
        )
    return segment_ids, segments_info


def _write_split(root: str, split: str, spec: SyntheticSplit) -> None:
    for folder in (split, f"panoptic_{split}", f"panoptic_stuff_{split}"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    images, annotations, panoptic_annotations = [], [], []
    for image_id in range(1, spec.num_images + 1):
        image, layout, objects = render_scene(rng)
        height, width = layout.shape
        stem = f"{split}_{image_id:06d}"
        atomic_imwrite(
            os.path.join(root, split, stem + ".jpg"),
            image[:, :, ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, 95],
        )
        images.append(
            {"id": image_id, "file_name": stem + ".jpg", "height": height, "width": width}
        )
        for obj in objects:
            annotation = _instance_annotation(obj, height, width)
            annotation.update(id=len(annotations) + 1, image_id=image_id)
            annotations.append(annotation)
        segment_ids, segments_info = _panoptic_segments(layout, objects)
        atomic_imwrite(
            os.path.join(root, f"panoptic_{split}", stem + ".png"), id2rgb(segment_ids)[:, :, ::-1]
        )
        semantic = panoptic_to_stuff_semantic(segment_ids, segments_info, SYNTHETIC_CATEGORIES)
        atomic_imwrite(os.path.join(root, f"panoptic_stuff_{split}", stem + ".png"), semantic)
        panoptic_annotations.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )
    things = [
        {k: c[k] for k in ("id", "name")} | {"supercategory": "shape"} for c in THING_CATEGORIES
    ]
    _dump_json(
        os.path.join(root, "annotations", f"instances_{split}.json"),
        {"images": images, "annotations": annotations, "categories": things},
    )
    _dump_json(
        os.path.join(root, "annotations", f"panoptic_{split}.json"),
        {"images": images, "annotations": panoptic_annotations, "categories": SYNTHETIC_CATEGORIES},
    )


def _dump_json(path: str, content: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_json_dump(content, path)


def _manifest() -> dict:
    splits = {name: vars(spec) for name, spec in SYNTHETIC_SPLITS.items()}
    return {"generator_version": GENERATOR_VERSION, "splits": splits}


def _is_current(root: str) -> bool:
    try:
        with open(os.path.join(root, "manifest.json")) as f:
            return json.load(f) == _manifest()
    except (OSError, ValueError):
        return False


def ensure_synthetic_dataset(datasets_root: str) -> str:
    """Generate the synthetic dataset under `datasets_root` unless a current copy is there.

    Generation writes into a temporary sibling folder and renames it into place, so an
    interrupted run never leaves a half-written dataset, and concurrent processes (one per GPU)
    agree on one copy. Returns the dataset folder.
    """
    root = os.path.join(datasets_root, SYNTHETIC_DIRNAME)
    if _is_current(root):
        return root
    os.makedirs(datasets_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{SYNTHETIC_DIRNAME}-", dir=datasets_root)
    try:
        for split, spec in SYNTHETIC_SPLITS.items():
            _write_split(staging, split, spec)
        _dump_json(os.path.join(staging, "manifest.json"), _manifest())
        if os.path.exists(root) and not _is_current(root):
            stale = tempfile.mkdtemp(prefix=f".{SYNTHETIC_DIRNAME}-stale-", dir=datasets_root)
            os.replace(root, os.path.join(stale, "old"))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, root)
        except OSError:
            if not _is_current(root):  # another process won the race with the same content
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _generated(loader: Callable, datasets_root: str) -> Callable[[], list[dict]]:
    """Wrap a Detectron2 loader so that the dataset is generated on first use."""

    def load():
        ensure_synthetic_dataset(datasets_root)
        return loader()

    return load


def _load_separated(instances_json: str, image_root: str, sem_seg_root: str, name: str):
    """Detectron2's "separated" panoptic loader: COCO instances merged with stuff PNGs."""
    return merge_to_panoptic(
        load_coco_json(instances_json, image_root, name), load_sem_seg(sem_seg_root, image_root)
    )


def register_all_synthetic(datasets_root: str) -> None:
    """Register the instance, panoptic and separated-panoptic splits of the synthetic data."""
    root = os.path.join(datasets_root, SYNTHETIC_DIRNAME)
    instance_meta = thing_metadata(SYNTHETIC_CATEGORIES)
    for split in SYNTHETIC_SPLITS:
        image_root = os.path.join(root, split)
        instances_json = os.path.join(root, "annotations", f"instances_{split}.json")
        panoptic_json = os.path.join(root, "annotations", f"panoptic_{split}.json")
        panoptic_root = os.path.join(root, f"panoptic_{split}")
        sem_seg_root = os.path.join(root, f"panoptic_stuff_{split}")

        name = f"d2seg_synthetic_instance_{split}"
        DatasetCatalog.register(
            name,
            _generated(partial(load_coco_json, instances_json, image_root, name), datasets_root),
        )
        MetadataCatalog.get(name).set(
            json_file=instances_json, image_root=image_root, evaluator_type="coco", **instance_meta
        )

        name = f"d2seg_synthetic_panoptic_{split}"
        standard_meta = standard_panoptic_metadata(SYNTHETIC_CATEGORIES)
        DatasetCatalog.register(
            name,
            _generated(
                partial(
                    load_coco_panoptic_json, panoptic_json, image_root, panoptic_root, standard_meta
                ),
                datasets_root,
            ),
        )
        MetadataCatalog.get(name).set(
            panoptic_root=panoptic_root,
            image_root=image_root,
            panoptic_json=panoptic_json,
            json_file=instances_json,
            evaluator_type="coco_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **standard_meta,
        )

        name = f"d2seg_synthetic_panoptic_{split}_separated"
        DatasetCatalog.register(
            name,
            _generated(
                partial(_load_separated, instances_json, image_root, sem_seg_root, name),
                datasets_root,
            ),
        )
        MetadataCatalog.get(name).set(
            panoptic_root=panoptic_root,
            image_root=image_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            json_file=instances_json,
            evaluator_type="coco_panoptic_seg",
            ignore_label=255,
            **separated_panoptic_metadata(SYNTHETIC_CATEGORIES),
        )
