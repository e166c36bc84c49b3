"""Synthetic instance and panoptic data: seeded shape scenes written in the real COCO formats.

Every image shows the shared stuff background (:mod:`d2seg.data.synthetic.scene`) and several
"thing" shapes (circle / triangle / square, each with its own colour family) at varied scales,
rotations and depths, so that objects occlude each other. Some images also hold a crowd: a
cluster of small shapes annotated as one `iscrowd=1` region.

The generator writes, under ``$DETECTRON2_DATASETS/d2seg_synthetic/``:

- ``{split}/*.jpg``                         images
- ``annotations/instances_{split}.json``    COCO instances; unoccluded objects as polygons,
                                            occluded objects and crowds as compressed RLE
- ``annotations/panoptic_{split}.json``     COCO panoptic json (things and stuff)
- ``panoptic_{split}/*.png``                COCO panoptic PNGs (id = R + 256 G + 256^2 B)
- ``panoptic_stuff_{split}/*.png``          semantic PNGs for Panoptic FPN (things 0, stuff 1..N)

:mod:`d2seg.data.datasets.synthetic` registers them through Detectron2's own COCO loaders.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import id2rgb

from d2seg.data.panoptic_utils import panoptic_to_stuff_semantic
from d2seg.data.synthetic.engine import SyntheticSplit, ensure_generated, splits_manifest
from d2seg.data.synthetic.scene import STUFF_CATEGORIES, Scene, keep_visible
from d2seg.utils.file_io import atomic_imwrite, atomic_json_dump

GENERATOR_VERSION = 1
"""Bump when the generated content changes; stale copies on disk are regenerated."""

SYNTHETIC_DIRNAME = "d2seg_synthetic"

THING_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 50, 50]},
    {"id": 2, "name": "triangle", "isthing": 1, "color": [40, 190, 60]},
    {"id": 3, "name": "square", "isthing": 1, "color": [50, 80, 230]},
]
SYNTHETIC_CATEGORIES = THING_CATEGORIES + STUFF_CATEGORIES

SYNTHETIC_SPLITS = {
    "train": SyntheticSplit(num_images=320, seed=0),
    "val": SyntheticSplit(num_images=48, seed=1),
}

# Shape parameters, in pixels of an image whose sides come from scene.IMAGE_SIDE_RANGE.
OBJECTS_PER_IMAGE = (2, 7)  # [low, high) objects drawn per image, before occlusion filtering
OBJECT_SIZE_RANGE = (18.0, 96.0)  # object diameter; log-uniform so small objects are common
MIN_VISIBLE_PIXELS = 40
CROWD_PROBABILITY = 0.15
CIRCLE_VERTICES = 32


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


def render_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draw one scene.

    Returns:
        image: (H, W, 3) uint8 RGB.
        stuff_layout: (H, W) index into STUFF_CATEGORIES.
        objects: visible objects bottom to top, with "category", "polygons", "iscrowd",
            "full_mask" and "visible_mask" ((H, W) uint8).
    """
    scene = Scene.with_background(rng)
    objects = _sample_objects(rng, scene.height, scene.width)
    visible = keep_visible([obj["full_mask"] for obj in objects], MIN_VISIBLE_PIXELS)
    kept = []
    for index, mask in visible:
        obj = objects[index]
        obj["visible_mask"] = mask.astype(np.uint8)
        scene.paint(rng, mask, obj["category"]["color"])
        kept.append(obj)
    return scene.image(), scene.stuff_layout, kept


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


def write_split(root: str, split: str, spec: SyntheticSplit) -> None:
    """Write `spec.num_images` scenes of one split in the COCO instance and panoptic formats."""
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


def manifest() -> dict:
    """What a current copy of this dataset was generated with."""
    return splits_manifest(GENERATOR_VERSION, SYNTHETIC_SPLITS)


def _write_dataset(root: str) -> None:
    for split, spec in SYNTHETIC_SPLITS.items():
        write_split(root, split, spec)


def ensure_synthetic_dataset(datasets_root: str) -> str:
    """Generate the synthetic instance/panoptic data under `datasets_root` unless a current
    copy is there (atomically, see :func:`~d2seg.data.synthetic.engine.ensure_generated`).
    Returns the dataset folder."""
    return ensure_generated(datasets_root, SYNTHETIC_DIRNAME, manifest(), _write_dataset)
