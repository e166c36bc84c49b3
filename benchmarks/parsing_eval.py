#!/usr/bin/env python
"""Parsing evaluation speed: d2seg's ParsingEvaluator against a straightforward loop in the
style of the authors' reference (soeaver/Parsing-R-CNN, ``parsing_eval.py``), same inputs.

The reference-style loop keeps every detection as an image-sized part map, paints and scores
the global map of each image from the full maps, and for every detection re-reads the part-map
PNG of every ground-truth person of its image and builds a full C x C histogram per pair. d2seg
reads each PNG once per image, keeps crops and reads only where crops overlap (see
``d2seg/evaluation/parsing_evaluation.py``). Both must give the same metrics; the script checks.

Data: synthetic human-parsing scenes (the built-in generator's figures), ground truth written
as PNGs to a temporary folder; detections are the ground-truth persons shifted by a few pixels,
some with left/right swapped or a part relabelled, plus duplicates and false positives.

    python benchmarks/parsing_eval.py                  # 500 images of ~256 px
    python benchmarks/parsing_eval.py --scale 3        # the same scenes 3x larger (~770 px)
    python benchmarks/parsing_eval.py --extra 10       # 10 more low-scoring detections per image
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from PIL import Image

from d2seg.data.datasets.human_parsing import CIHP_CLASSES, CIHP_FLIP_PAIRS
from d2seg.data.synthetic.parsing import render_parsing_scene
from d2seg.evaluation.parsing_evaluation import IOU_THRESHOLDS, ParsingEvaluator
from d2seg.modeling.postprocessing.parsing import LabelCrop


def _reference_iou(
    gt: np.ndarray, pred: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU (NaN where neither map has the class) and the full histogram."""
    valid = gt < num_classes
    hist = np.bincount(
        num_classes * gt[valid].astype(int) + pred[valid], minlength=num_classes**2
    ).reshape(num_classes, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist)), hist


def _voc_ap_loop(recall: list[float], precision: list[float]) -> float:
    recall = [0.0, *recall, 1.0]
    precision = [0.0, *precision, 0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum(
        (recall[i + 1] - recall[i]) * precision[i + 1]
        for i in range(len(recall) - 1)
        if recall[i + 1] != recall[i]
    )


def reference_style_metrics(
    images: list[dict],
    num_classes: int,
    semseg_score_thresh: float,
    ap_score_thresh: float,
    count_empty_images: bool,
    matching: str = "unclaimed",
) -> dict[str, float]:
    """mIoU, AP^p per threshold and PCP per threshold (x100), the reference's way.

    `images`: dicts with "parsings" (image-sized uint8 maps, one per detection), "scores",
    "semseg_file" and "person_files" (ground-truth PNGs). `matching`: "reference" takes each
    detection's best person, claimed or not (the authors' loop); "unclaimed" the best one among
    the persons not claimed yet at that threshold.
    """
    hist = np.zeros((num_classes, num_classes))
    for image in images:
        if not image["parsings"] and not count_empty_images:
            continue
        gt = cv2.imread(image["semseg_file"], cv2.IMREAD_GRAYSCALE)
        painted = np.zeros(gt.shape, np.uint8)
        for k in np.argsort(image["scores"], kind="stable"):
            if image["scores"][k] >= semseg_score_thresh:
                painted = np.where(image["parsings"][k] > 0, image["parsings"][k], painted)
        hist += _reference_iou(gt, painted, num_classes)[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        class_iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    results = {"mIoU": 100 * np.nanmean(class_iou)}

    detections = [
        (score, i, k) for i, image in enumerate(images) for k, score in enumerate(image["scores"])
    ]
    order = np.argsort([-d[0] for d in detections], kind="stable")
    num_persons = sum(len(image["person_files"]) for image in images)
    claimed = {t: set() for t in IOU_THRESHOLDS}
    hits = {t: [] for t in IOU_THRESHOLDS}
    pcp = {t: [] for t in IOU_THRESHOLDS}
    for d in order:
        score, i, k = detections[d]
        if score < ap_score_thresh:
            continue
        candidates = []  # (mean IoU, person, per-class IoU, number of parts)
        for person, path in enumerate(images[i]["person_files"]):
            gt = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            iou = _reference_iou(gt, images[i]["parsings"][k], num_classes)[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(iou)
            labels = np.unique(gt)
            candidates.append(
                (mean, person, iou, int(np.sum((labels > 0) & (labels < num_classes))))
            )
        for t in IOU_THRESHOLDS:
            best, best_person, best_iou, best_parts = -np.inf, -1, None, 0
            for mean, person, iou, parts in candidates:
                if matching == "unclaimed" and (i, person) in claimed[t]:
                    continue
                if mean > best:
                    best, best_person, best_iou, best_parts = mean, person, iou, parts
            if best > t and (i, best_person) not in claimed[t]:
                claimed[t].add((i, best_person))
                hits[t].append(1)
                correct = np.sum(best_iou[1:] > t)
                pcp[t].append(correct / best_parts if best_parts > 0 else 0.0)
            else:
                hits[t].append(0)
    for t in IOU_THRESHOLDS:
        tp = np.cumsum(hits[t])
        fp = np.cumsum(1 - np.asarray(hits[t]))
        recall = list(tp / num_persons)
        precision = list(tp / np.maximum(tp + fp, np.finfo(np.float64).eps))
        results[f"APp{round(t * 100)}"] = 100 * _voc_ap_loop(recall, precision)
        results[f"PCP{round(t * 100)}"] = 100 * sum(pcp[t]) / num_persons
    return results


class FixedLabelCrops:
    """Stands in for `instances.pred_parsing`: returns given label crops instead of pasting."""

    def __init__(self, crops: list[LabelCrop]):
        self.crops = crops

    def __len__(self) -> int:
        return len(self.crops)

    def label_crops(self, boxes, image_size) -> list[LabelCrop]:
        return self.crops


def prediction_output(
    maps: list[np.ndarray], scores: list[float], image_size: tuple[int, int]
) -> dict:
    """A model-style output whose instances paste to exactly the given image-sized maps."""
    instances = Instances(image_size)
    crops = []
    for labels in maps:
        ys, xs = np.nonzero(labels)
        if ys.size == 0:
            crops.append(LabelCrop(0, 0, torch.zeros((0, 0), dtype=torch.uint8)))
            continue
        y0, x0 = ys.min(), xs.min()
        crop = labels[y0 : ys.max() + 1, x0 : xs.max() + 1]
        crops.append(LabelCrop(int(x0), int(y0), torch.from_numpy(np.ascontiguousarray(crop))))
    instances.pred_boxes = Boxes(torch.zeros((len(maps), 4)))
    instances.parsing_scores = torch.tensor(scores, dtype=torch.float64)
    instances.pred_parsing = FixedLabelCrops(crops)
    return {"instances": instances}


def _swap_left_right(labels: np.ndarray) -> np.ndarray:
    swapped = labels.copy()
    for left, right in CIHP_FLIP_PAIRS:
        swapped[labels == left], swapped[labels == right] = right, left
    return swapped


def make_benchmark_data(root: str, num_images: int, scale: int, extra: int = 0, seed: int = 0):
    """Write ground truth for `num_images` scenes under `root`; returns the dataset records
    and, per image, the detections as image-sized maps with their scores (`extra` more per
    image: low-scoring, strongly shifted copies of its persons, as a detector's tail)."""
    rng = np.random.default_rng(seed)
    records, detections = [], []
    for image_id in range(num_images):
        _, categories, humans, _ = render_parsing_scene(rng)
        if scale != 1:
            size = (categories.shape[1] * scale, categories.shape[0] * scale)
            categories = cv2.resize(categories, size, interpolation=cv2.INTER_NEAREST)
            humans = cv2.resize(humans, size, interpolation=cv2.INTER_NEAREST)
        semseg_file = os.path.join(root, f"{image_id}.png")
        Image.fromarray(categories).save(semseg_file)
        annotations, maps, scores = [], [], []
        for person in range(1, humans.max() + 1):
            part_map = np.where(humans == person, categories, 0).astype(np.uint8)
            path = os.path.join(root, f"{image_id}_{person}.png")
            Image.fromarray(part_map).save(path)
            annotations.append({"parsing_file_name": path})
            copies = 1 + (rng.random() < 0.2)  # a duplicate now and then
            for _ in range(copies if rng.random() < 0.9 else 0):
                shift = rng.integers(-3, 4, size=2) * scale
                guess = np.roll(part_map, tuple(shift), axis=(0, 1))
                if rng.random() < 0.3:
                    guess = _swap_left_right(guess)
                if rng.random() < 0.2:
                    guess[guess == rng.integers(1, len(CIHP_CLASSES))] = 5
                maps.append(guess)
                scores.append(float(rng.uniform(0.05, 1.0)))
        if maps and rng.random() < 0.5:  # a false positive away from everyone
            maps.append(np.roll(maps[0], (0, maps[0].shape[1] // 2), axis=(0, 1)))
            scores.append(float(rng.uniform(0.05, 0.6)))
        for _ in range(extra if maps else 0):
            shift = rng.integers(-20, 21, size=2) * scale
            maps.append(np.roll(maps[rng.integers(len(maps))], tuple(shift), axis=(0, 1)))
            scores.append(float(rng.uniform(0.05, 0.3)))
        height, width = categories.shape
        records.append(
            {
                "image_id": image_id,
                "height": height,
                "width": width,
                "parsing_semseg_file_name": semseg_file,
                "annotations": annotations,
            }
        )
        detections.append((maps, scores))
    return records, detections


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--scale", type=int, default=1, help="upscale the scenes this much")
    parser.add_argument("--extra", type=int, default=0, help="low-scoring detections per image")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        records, detections = make_benchmark_data(root, args.num_images, args.scale, args.extra)
        name = "d2seg_benchmark_parsing"
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(parsing_classes=list(CIHP_CLASSES))
        num_dets = sum(len(scores) for _, scores in detections)
        num_persons = sum(len(r["annotations"]) for r in records)
        print(f"{len(records)} images, {num_persons} persons, {num_dets} detections")

        evaluator = ParsingEvaluator(name, distributed=False)
        outputs = [
            prediction_output(maps, scores, (record["height"], record["width"]))
            for record, (maps, scores) in zip(records, detections)
        ]
        start = time.perf_counter()
        for record, output in zip(records, outputs):
            evaluator.process([{"image_id": record["image_id"]}], [output])
        ours = evaluator.evaluate()["parsing"]
        d2seg_time = time.perf_counter() - start

        images = [
            {
                "parsings": maps,
                "scores": scores,
                "semseg_file": record["parsing_semseg_file_name"],
                "person_files": [a["parsing_file_name"] for a in record["annotations"]],
            }
            for record, (maps, scores) in zip(records, detections)
        ]
        start = time.perf_counter()
        reference = reference_style_metrics(images, len(CIHP_CLASSES), 0.3, 0.001, True)
        reference_time = time.perf_counter() - start

    for key in ("mIoU", "APp50", "APpvol", "PCP50"):
        expected = (
            np.mean([reference[f"APp{round(t * 100)}"] for t in IOU_THRESHOLDS])
            if key == "APpvol"
            else reference[key]
        )
        print(f"{key:>7}: d2seg {ours[key]:7.3f}   reference-style {expected:7.3f}")
        if not np.isclose(ours[key], expected, atol=1e-6):
            raise AssertionError(f"{key} differs: {ours[key]} vs {expected}")
    print(f"d2seg ParsingEvaluator (process + evaluate): {d2seg_time:.2f} s")
    print(f"reference-style loop:                        {reference_time:.2f} s")
    print(f"speed-up x{reference_time / d2seg_time:.1f}")


if __name__ == "__main__":
    main()
