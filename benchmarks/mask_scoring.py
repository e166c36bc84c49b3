#!/usr/bin/env python
"""Mask Scoring R-CNN vs Mask R-CNN on the synthetic val split, measured side by side.

Needs both quickstart models trained with the quickstart schedule, each as

    python tools/train_net.py --config-file configs/quickstart/NAME.yaml \
        OUTPUT_DIR output/quickstart/NAME

for NAME in mask_rcnn_R_18_FPN_synthetic and mask_scoring_rcnn_R_18_FPN_synthetic;
`make benchmark-mask-scoring` trains whichever is missing, then runs this script.

Prints (a) the Spearman correlation between each detection's score and the true IoU of its mask
with the best ground truth of its class (Mask R-CNN `scores`, MS R-CNN `scores` and
`mask_scores`), over all detections and over those with IoU > 0.5, (b) mask AP of both (MS
R-CNN ranks masks by `mask_scores`), and (c) inference
time of MS R-CNN divided by Mask R-CNN's on the same preloaded images: the models alternate
image by image over several rounds, and each image counts with its fastest time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.modeling import build_model
from scipy.stats import spearmanr

from d2seg.config import load_config
from d2seg.data import build_test_mapper
from d2seg.evaluation import MaskScoringCOCOEvaluator

DATASET = "d2seg_synthetic_instance_val"
MODELS = {
    "Mask R-CNN": (
        "configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml",
        "output/quickstart/mask_rcnn_R_18_FPN_synthetic",
    ),
    "MS R-CNN": (
        "configs/quickstart/mask_scoring_rcnn_R_18_FPN_synthetic.yaml",
        "output/quickstart/mask_scoring_rcnn_R_18_FPN_synthetic",
    ),
}


def load_model(config: str, output_dir: str):
    weights = os.path.join(output_dir, "model_final.pth")
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"{weights} not found: train {config} first (see this script's docstring)"
        )
    cfg = load_config(config, ["MODEL.WEIGHTS", weights])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    return cfg, model


def true_mask_ious(instances, record) -> np.ndarray:
    """Per detection: IoU of its mask with the best non-crowd ground truth of its class."""
    height, width = record["height"], record["width"]
    gt_by_class: dict[int, list] = {}
    for annotation in record["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            segmentation = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
        gt_by_class.setdefault(annotation["category_id"], []).append(segmentation)
    ious = np.zeros(len(instances))
    masks = instances.pred_masks.numpy().astype(np.uint8)
    for index, (mask, category) in enumerate(zip(masks, instances.pred_classes.tolist())):
        candidates = gt_by_class.get(category)
        if candidates:
            predicted = mask_util.encode(np.asfortranarray(mask))
            ious[index] = mask_util.iou([predicted], candidates, [0] * len(candidates)).max()
    return ious


def timed_rounds(models: dict, inputs: list, rounds: int) -> tuple[dict, dict]:
    """Alternate the models image by image, `rounds` times; per model, the sum over images of
    each image's fastest time (robust to transient load), and the outputs of the last round."""
    fastest = {name: [float("inf")] * len(inputs) for name in models}
    outputs = {name: [None] * len(inputs) for name in models}
    with torch.no_grad():
        for _ in range(rounds):
            for index, batch in enumerate(inputs):
                for name, (_, model) in models.items():
                    start = time.perf_counter()
                    outputs[name][index] = model([batch])[0]
                    fastest[name][index] = min(fastest[name][index], time.perf_counter() - start)
    return {name: sum(times) for name, times in fastest.items()}, outputs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per model")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    models = {name: load_model(*paths) for name, paths in MODELS.items()}
    cfg = next(iter(models.values()))[0]
    loader = build_detection_test_loader(cfg, DATASET, mapper=build_test_mapper(cfg))
    inputs = [batch[0] for batch in loader]
    records = {r["image_id"]: r for r in DatasetCatalog.get(DATASET)}

    best_time, outputs = timed_rounds(models, inputs, args.rounds)

    print(f"{len(inputs)} images of {DATASET}, {torch.get_num_threads()} threads")
    print(
        f"{'model':<12} {'ranking score':<14} {'Spearman(score, IoU)':>21} "
        f"{'(IoU > 0.5 only)':>17} {'mask AP':>8} {'box AP':>7} {'s/image':>8}"
    )
    for name in models:
        instances = [o["instances"].to("cpu") for o in outputs[name]]
        ious = np.concatenate(
            [true_mask_ious(x, records[i["image_id"]]) for x, i in zip(instances, inputs)]
        )
        evaluator = MaskScoringCOCOEvaluator(DATASET)
        evaluator.reset()
        evaluator.process(inputs, outputs[name])
        results = evaluator.evaluate()
        ranking = ["scores", "mask_scores"] if instances[0].has("mask_scores") else ["scores"]
        for field in ranking:
            scores = np.concatenate([x.get(field).numpy() for x in instances])
            rho = spearmanr(scores, ious).statistic
            matched = ious > 0.5
            rho_matched = spearmanr(scores[matched], ious[matched]).statistic
            ap = results["segm"]["AP"] if field == ranking[-1] else float("nan")
            print(
                f"{name:<12} {field:<14} {rho:>21.3f} {rho_matched:>17.3f} {ap:>8.1f} "
                f"{results['bbox']['AP']:>7.1f} {best_time[name] / len(inputs):>8.4f}"
            )
    ratio = best_time["MS R-CNN"] / best_time["Mask R-CNN"]
    print(f"inference time MS R-CNN / Mask R-CNN: {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
