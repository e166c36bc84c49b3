#!/usr/bin/env python
"""Create the stuff-semantic PNGs that Panoptic FPN's "separated" COCO splits read.

For each image of ``annotations/panoptic_{split}.json`` it writes
``panoptic_stuff_{split}/<image>.png``: 0 for every thing pixel, 1..53 for the stuff classes in
category order, 255 for unlabeled pixels — the layout Detectron2's
``coco_2017_{train,val}_panoptic_separated`` registrations expect.

    python datasets/prepare_coco_panoptic_fpn.py                # $DETECTRON2_DATASETS/coco
    python datasets/prepare_coco_panoptic_fpn.py --coco-root /data/coco --splits val2017

Each PNG is written to a temporary name and renamed, so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
import os
from multiprocessing import Pool

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image
from tqdm import tqdm

from d2seg.data.panoptic_utils import panoptic_to_stuff_semantic
from d2seg.utils.file_io import atomic_open


def _convert(job: tuple[str, str, list, list]) -> None:
    panoptic_png, output_png, segments_info, categories = job
    try:
        segment_ids = rgb2id(np.asarray(Image.open(panoptic_png).convert("RGB")))
    except OSError as error:
        raise OSError(f"cannot read panoptic PNG {panoptic_png!r}: {error}") from error
    semantic = panoptic_to_stuff_semantic(segment_ids, segments_info, categories)
    with atomic_open(output_png, "wb") as f:
        Image.fromarray(semantic).save(f, format="PNG")


def convert_split(
    panoptic_json: str, panoptic_root: str, output_root: str, workers: int = 4
) -> int:
    """Write one stuff PNG per image listed in `panoptic_json`; returns how many."""
    with open(panoptic_json) as f:
        content = json.load(f)
    for key in ("annotations", "categories"):
        if key not in content:
            raise KeyError(f"{panoptic_json!r} has no {key!r}: not a COCO panoptic json")
    os.makedirs(output_root, exist_ok=True)
    jobs = [
        (
            os.path.join(panoptic_root, a["file_name"]),
            os.path.join(output_root, a["file_name"]),
            a["segments_info"],
            content["categories"],
        )
        for a in content["annotations"]
    ]
    description = f"stuff PNGs -> {output_root}"
    if workers <= 1:
        for job in tqdm(jobs, desc=description):
            _convert(job)
    else:
        with Pool(workers) as pool:
            for _ in tqdm(
                pool.imap_unordered(_convert, jobs, chunksize=16), total=len(jobs), desc=description
            ):
                pass
    return len(jobs)


def main(argv=None) -> None:
    root = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "coco")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-root", default=root)
    parser.add_argument("--splits", nargs="+", default=["train2017", "val2017"])
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    for split in args.splits:
        convert_split(
            os.path.join(args.coco_root, "annotations", f"panoptic_{split}.json"),
            os.path.join(args.coco_root, f"panoptic_{split}"),
            os.path.join(args.coco_root, f"panoptic_stuff_{split}"),
            args.workers,
        )


if __name__ == "__main__":
    main()
