#!/usr/bin/env python
"""Run a config and its weights on images and write PNG overlays of the predictions.

    python tools/demo.py --config-file CONFIG --input a.jpg b.jpg --output out/ MODEL.WEIGHTS w.pth
    python tools/demo.py --config-file CONFIG --dataset d2seg_synthetic_instance_val \
        --num-images 4 --output out/ MODEL.WEIGHTS w.pth
"""

import argparse
import os

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor

from d2seg.config import load_config
from d2seg.utils.visualizer import draw_predictions


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files")
    source.add_argument("--dataset", help="a registered dataset: draw its first images")
    parser.add_argument("--num-images", type=int, default=4, help="with --dataset")
    parser.add_argument("--output", required=True, help="folder for the PNG overlays")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if args.dataset:
        files = [d["file_name"] for d in DatasetCatalog.get(args.dataset)[: args.num_images]]
        metadata = MetadataCatalog.get(args.dataset)
    else:
        files = args.input
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in files:
        try:
            image = read_image(path, format="BGR")
        except OSError as error:
            raise OSError(f"cannot read image {path!r}: {error}") from error
        overlay = draw_predictions(
            image[:, :, ::-1], predictor(image), metadata, args.confidence_threshold
        )
        target = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(target, overlay[:, :, ::-1])
        written.append(target)
    print(f"wrote {len(written)} overlays to {args.output}")
    return written


if __name__ == "__main__":
    main()
