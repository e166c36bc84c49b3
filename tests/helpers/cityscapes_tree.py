"""Fabricate a miniature Cityscapes tree: polygon jsons rendered with cityscapesscripts itself.

Each image has road / sidewalk / building / vegetation / sky stuff, two or three cars, a person
and (in one image) a "cargroup" crowd region. labelIds and instanceIds come from
cityscapesscripts' json2labelImg / createInstanceImage, exactly as the official ground truth does.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

HEIGHT, WIDTH = 128, 256
FRAMES = {
    "train": [("aachen", "000000", "000019"), ("bochum", "000000", "000313")],
    "val": [("frankfurt", "000000", "000294"), ("lindau", "000001", "000019")],
}


def _box(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _objects(rng: np.random.Generator, with_crowd: bool) -> list[dict]:
    horizon = int(rng.integers(45, 60))
    objects = [
        {"label": "sky", "polygon": _box(0, 0, WIDTH, horizon)},
        {"label": "building", "polygon": _box(0, horizon - 30, WIDTH // 2, horizon + 20)},
        {"label": "vegetation", "polygon": _box(WIDTH // 2, horizon - 20, WIDTH, horizon + 20)},
        {"label": "sidewalk", "polygon": _box(0, horizon + 20, WIDTH, horizon + 35)},
        {"label": "road", "polygon": _box(0, horizon + 35, WIDTH, HEIGHT)},
    ]
    for index in range(int(rng.integers(2, 4))):
        x0 = 10 + 75 * index + int(rng.integers(0, 10))
        y0 = horizon + 30 + int(rng.integers(0, 15))
        objects.append({"label": "car", "polygon": _box(x0, y0, x0 + 45, y0 + 25)})
    x0 = int(rng.integers(120, 200))
    objects.append({"label": "person", "polygon": _box(x0, horizon, x0 + 14, horizon + 40)})
    if with_crowd:
        objects.append({"label": "cargroup", "polygon": _box(200, horizon + 22, 250, horizon + 42)})
    return objects


def make_cityscapes_tree(root: Path) -> Path:
    """Write images, polygon jsons, labelIds and instanceIds for two splits under `root`."""
    rng = np.random.default_rng(7)
    for split, frames in FRAMES.items():
        for index, (city, sequence, frame) in enumerate(frames):
            stem = f"{city}_{sequence}_{frame}"
            image_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
            Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png")
            polygons = {
                "imgHeight": HEIGHT,
                "imgWidth": WIDTH,
                "objects": _objects(rng, with_crowd=index == 0),
            }
            polygons_file = gt_dir / f"{stem}_gtFine_polygons.json"
            polygons_file.write_text(json.dumps(polygons))
            json2labelImg(str(polygons_file), str(gt_dir / f"{stem}_gtFine_labelIds.png"), "ids")
            annotation = Annotation()
            annotation.fromJsonFile(str(polygons_file))
            instance_ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.uint16)
            # 16-bit PNG, as the official instanceIds (Pillow cannot write mode "I" PNGs).
            cv2.imwrite(str(gt_dir / f"{stem}_gtFine_instanceIds.png"), instance_ids)
    return root
