#!/usr/bin/env python
"""Convert CIHP / MHP-v2 / LIP from their original releases into what d2seg's loaders read.

Reads each release as it unpacks (layouts in datasets/README.md) and writes, next to it,
``annotations/parsing_{split}.json`` (COCO json: person boxes and masks, each person's part-map
file, each image's global part map) and ``parsing_{split}/<image>_<k>.png`` (one part map per
person), plus ``semseg_{split}/`` for MHP-v2, which ships no global part map.

    python datasets/prepare_parsing.py cihp                 # $DETECTRON2_DATASETS/CIHP
    python datasets/prepare_parsing.py mhp_v2 lip --splits val
    python datasets/prepare_parsing.py cihp --root /data/CIHP --workers 8

Files are written under temporary names and renamed, so an interrupted run leaves no partial
file; running it again rewrites the same content.
"""

from __future__ import annotations

import argparse
import os

from d2seg.data.converters.human_parsing import prepare_split
from d2seg.data.datasets.builtin import datasets_root
from d2seg.data.datasets.human_parsing import PARSING_FAMILIES, PARSING_SPLITS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(PARSING_FAMILIES))
    parser.add_argument(
        "--root",
        help="the dataset's folder, with a single dataset (default: "
        "$DETECTRON2_DATASETS/CIHP, .../LV-MHP-v2 or .../LIP)",
    )
    parser.add_argument("--splits", nargs="+", default=list(PARSING_SPLITS))
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    if args.root and len(args.datasets) > 1:
        parser.error("--root names the folder of one dataset; give a single dataset with it")
    for name in args.datasets:
        root = args.root or os.path.join(datasets_root(), PARSING_FAMILIES[name].dirname)
        for split in args.splits:
            print(f"wrote {prepare_split(name, root, split, args.workers)}")


if __name__ == "__main__":
    main()
