#!/usr/bin/env python
"""Create the derived Cityscapes files d2seg's Cityscapes splits read, with cityscapesscripts.

1. ``gtFine/*/*/*_gtFine_labelTrainIds.png`` from the polygon jsons (what cityscapesscripts'
   createTrainIdLabelImgs does), for the semantic splits;
2. ``gtFine/cityscapes_panoptic_{split}/`` + ``.json`` with createPanopticImgs, for panoptic.

    python datasets/prepare_cityscapes.py      # $DETECTRON2_DATASETS/cityscapes
    python datasets/prepare_cityscapes.py --cityscapes-root /data/cityscapes --splits val
"""

from __future__ import annotations

import argparse
import glob
import os

from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from tqdm import tqdm


def create_train_id_label_images(cityscapes_root: str, splits: list[str]) -> int:
    """Render `*_gtFine_labelTrainIds.png` next to each polygon json; returns how many."""
    files = sorted(
        f
        for split in splits
        for f in glob.glob(
            os.path.join(cityscapes_root, "gtFine", split, "*", "*_gtFine_polygons.json")
        )
    )
    if not files:
        raise FileNotFoundError(
            f"no gtFine/<split>/<city>/*_gtFine_polygons.json under {cityscapes_root!r} for "
            f"splits {splits}; set DETECTRON2_DATASETS or --cityscapes-root (datasets/README.md)"
        )
    for polygons in tqdm(files, desc="labelTrainIds"):
        target = polygons.replace("_polygons.json", "_labelTrainIds.png")
        partial = target + ".partial.png"
        json2labelImg(polygons, partial, "trainIds")
        os.replace(partial, target)
    return len(files)


def create_panoptic_images(cityscapes_root: str, splits: list[str]) -> None:
    """COCO-format panoptic PNGs + json per split (cityscapesscripts prints its own progress)."""
    gt_root = os.path.join(cityscapes_root, "gtFine")
    convert2panoptic(
        cityscapesPath=gt_root, outputFolder=gt_root, useTrainId=False, setNames=splits
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cityscapes-root",
        default=os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "cityscapes"),
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    args = parser.parse_args(argv)
    create_train_id_label_images(args.cityscapes_root, args.splits)
    create_panoptic_images(args.cityscapes_root, args.splits)


if __name__ == "__main__":
    main()
