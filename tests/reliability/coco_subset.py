"""A small COCO-format instance dataset cut from the synthetic one, for runs on user data."""

import json
import shutil
from pathlib import Path

SYNTHETIC = Path(__file__).resolve().parents[2] / "datasets" / "d2seg_synthetic"


def make_coco_subset(root: Path, num_images: int, empty: tuple[int, ...] = ()) -> Path:
    """Copy the first `num_images` synthetic training images to ``root/images`` and write
    ``root/annotations.json`` with their instances; images whose position is in `empty` keep
    no annotation. Returns the json path."""
    content = json.loads((SYNTHETIC / "annotations" / "instances_train.json").read_text())
    images = content["images"][:num_images]
    (root / "images").mkdir(parents=True)
    for image in images:
        shutil.copy(SYNTHETIC / "train" / image["file_name"], root / "images")
    empty_ids = {images[i]["id"] for i in empty}
    kept = {image["id"] for image in images} - empty_ids
    content["images"] = images
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] in kept]
    json_file = root / "annotations.json"
    json_file.write_text(json.dumps(content))
    return json_file
