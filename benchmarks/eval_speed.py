"""Evaluation speed, side by side on the same synthetic inputs in one run.

Builds panoptic ground truth (PNG + json, COCO instance json of its things) for N images of
640 x 480 with ~30 segments each (stuff bands, overlapping things, crowd regions, VOID), and
predictions made from it (shifted, relabeled, dropped, merged and added segments; detections
jittered from the things, with false positives). Then times, end to end through the evaluator
API (``process()`` over every image, then ``evaluate()``; one whole evaluation after the other,
each pass making the same predictions again, outside the timers):

- PQ: Detectron2's ``COCOPanopticEvaluator`` (PNG per prediction + panopticapi) against
  d2seg's ``FastCOCOPanopticEvaluator`` without and with ``output_dir`` (which writes the
  submission PNGs); hotcoco's ``PanopticEval`` on those PNG files and on per-segment RLE masks
  built from the in-memory maps (its two ways in); the floor: decoding the ground-truth PNGs;
- COCO AP per task: Detectron2's ``COCOEvaluator`` with pycocotools and with its C++
  ``COCOeval_opt`` (where built) against d2seg's ``FastCOCOEvaluator`` on hotcoco. Their
  ``process()`` is the same Detectron2 code: it runs once and the predictions are copied.

and checks that the numbers agree: per-category TP / FP / FN against panopticapi's own counts,
PQ / AP against the reference evaluators. Usage::

    python benchmarks/eval_speed.py                # 500 images, ~30 segments, ~12 detections
    python benchmarks/eval_speed.py --images 50    # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.structures import Boxes, Instances
from panopticapi.evaluation import pq_compute_multi_core
from panopticapi.utils import rgb2id
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from d2seg.evaluation.coco_backend import FastCOCOEvaluator  # noqa: E402
from d2seg.evaluation.panoptic_counting import (  # noqa: E402
    decode_panoptic_png,
    encode_panoptic_png,
)
from d2seg.evaluation.panoptic_evaluation import FastCOCOPanopticEvaluator  # noqa: E402

HEIGHT, WIDTH = 480, 640
THINGS, STUFF = 20, 10  # category counts (COCO has 80 / 53)
PANOPTIC, INSTANCES = "d2seg_bench_panoptic", "d2seg_bench_instances"
DECODE_OPENCV = "GT PNG decode only: OpenCV (d2seg's decoder)"
DECODE_PIL = "GT PNG decode only: PIL + rgb2id (panopticapi's)"
READ_OPENCV = "GT PNG read only: OpenCV imread, no conversion to ids"
D2SEG = "d2seg, no output_dir"


# ------------------------------------------------------------------------------- the data
def _ellipse(rng, max_radius: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """A random filled ellipse as (window, mask inside the window)."""
    ry, rx = rng.integers(6, max_radius, size=2)
    cy, cx = rng.integers(0, HEIGHT), rng.integers(0, WIDTH)
    y0, y1, x0, x1 = (
        max(cy - ry, 0),
        min(cy + ry + 1, HEIGHT),
        max(cx - rx, 0),
        min(cx + rx + 1, WIDTH),
    )
    yy, xx = np.ogrid[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
    return (slice(y0, y1), slice(x0, x1)), (yy / ry) ** 2 + (xx / rx) ** 2 <= 1


def make_ground_truth(rng, segments: int) -> tuple[np.ndarray, list[dict]]:
    """Stuff bands, then things painted over them (5% crowd), then a VOID corner."""
    ids = np.zeros((HEIGHT, WIDTH), np.uint32)
    info = []
    new_ids = iter(rng.choice(np.arange(1, 1 << 24), size=segments + 8, replace=False).tolist())
    cuts = np.sort(rng.choice(np.arange(40, HEIGHT - 40), size=5, replace=False))
    for top, bottom in zip([0, *cuts], [*cuts, HEIGHT]):
        segment_id = next(new_ids)
        ids[top:bottom] = segment_id
        info.append(
            {"id": segment_id, "category_id": THINGS + 1 + int(rng.integers(STUFF)), "iscrowd": 0}
        )
    for _ in range(segments - 6):
        window, mask = _ellipse(rng, 90)
        segment_id = next(new_ids)
        ids[window][mask] = segment_id
        info.append(
            {
                "id": segment_id,
                "category_id": 1 + int(rng.integers(THINGS)),
                "iscrowd": int(rng.random() < 0.05),
            }
        )
    ids[: rng.integers(0, 60), : rng.integers(0, 80)] = 0  # VOID
    areas = dict(zip(*np.unique(ids, return_counts=True)))
    info = [dict(s, area=int(areas[s["id"]])) for s in info if s["id"] in areas]
    return ids, info


def make_panoptic_prediction(rng, gt_ids, gt_info) -> tuple[torch.Tensor, list[dict]]:
    """Segments shifted by up to 8 px (IoU on both sides of 0.5), 10% relabeled, 8% dropped,
    5% merged into another, and 3 added; output as a model's (ids, contiguous segments_info)."""
    pred = np.zeros_like(gt_ids, dtype=np.int32)
    info = []
    for k, segment in enumerate(gt_info):
        mask = gt_ids == segment["id"]
        roll, category = rng.random(), segment["category_id"]
        if roll < 0.08:
            continue
        if roll < 0.13 and info:
            pred[mask] = info[-1]["id"]
            continue
        if roll < 0.23:
            category = 1 + int(rng.integers(THINGS)) if category <= THINGS else category
        pred[np.roll(mask, tuple(rng.integers(-8, 9, size=2)), axis=(0, 1))] = k + 1
        info.append({"id": k + 1, "category_id": category})
    for k in range(3):
        window, mask = _ellipse(rng, 40)
        pred[window][mask] = len(gt_info) + 1 + k
        info.append({"id": len(gt_info) + 1 + k, "category_id": 1 + int(rng.integers(THINGS))})
    present = set(np.unique(pred).tolist())
    segments = [
        {
            "id": s["id"],
            "isthing": s["category_id"] <= THINGS,
            "category_id": s["category_id"] - 1 - (0 if s["category_id"] <= THINGS else THINGS),
        }
        for s in info
        if s["id"] in present
    ]
    return torch.from_numpy(pred), segments


def make_instances(rng, gt_ids, gt_info, per_image: int) -> Instances:
    """`per_image` detections: jittered visible masks of the things, the rest false positives."""
    things = [s for s in gt_info if s["category_id"] <= THINGS and not s["iscrowd"]]
    masks, classes = [], []
    for k in range(per_image):
        if k < len(things) and rng.random() < 0.85:
            mask = np.roll(gt_ids == things[k]["id"], tuple(rng.integers(-4, 5, size=2)), (0, 1))
            category = (
                things[k]["category_id"] - 1 if rng.random() < 0.9 else int(rng.integers(THINGS))
            )
        else:
            window, inside = _ellipse(rng, 60)
            mask = np.zeros((HEIGHT, WIDTH), bool)
            mask[window] = inside
            category = int(rng.integers(THINGS))
        if mask.any():
            masks.append(mask)
            classes.append(category)
    masks = torch.from_numpy(np.stack(masks))
    boxes = torch.stack(
        [
            torch.tensor([x.min(), y.min(), x.max() + 1, y.max() + 1])
            for y, x in (torch.nonzero(m, as_tuple=True) for m in masks)
        ]
    ).float()
    instances = Instances((HEIGHT, WIDTH))
    instances.pred_boxes, instances.pred_masks = Boxes(boxes), masks
    instances.pred_classes = torch.tensor(classes)
    instances.scores = torch.from_numpy(np.round(rng.random(len(masks)), 2)).float()
    return instances


def write_ground_truth(root: Path, images: list[tuple[np.ndarray, list[dict]]]) -> None:
    """Panoptic json + PNGs and the COCO instance json of the things, registered as datasets."""
    categories = [{"id": i, "name": f"thing{i}", "isthing": 1} for i in range(1, THINGS + 1)]
    categories += [
        {"id": THINGS + i, "name": f"stuff{i}", "isthing": 0} for i in range(1, STUFF + 1)
    ]
    (root / "panoptic").mkdir()
    records, annotations = [], []
    for image_id, (ids, info) in enumerate(images):
        (root / "panoptic" / f"{image_id}.png").write_bytes(encode_panoptic_png(ids))
        records.append(
            {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": info}
        )
        for s in info:
            if s["category_id"] <= THINGS:
                rle = mask_util.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "iscrowd": s["iscrowd"],
                        "category_id": s["category_id"],
                        "area": float(mask_util.area(rle)),
                        "bbox": mask_util.toBbox(rle).tolist(),
                        "segmentation": dict(rle, counts=rle["counts"].decode()),
                    }
                )
    image_list = [
        {"id": i, "height": HEIGHT, "width": WIDTH, "file_name": f"{i}.jpg"}
        for i in range(len(images))
    ]
    panoptic = {"images": image_list, "annotations": records, "categories": categories}
    (root / "panoptic.json").write_text(json.dumps(panoptic))
    instances = {
        "images": image_list,
        "annotations": annotations,
        "categories": categories[:THINGS],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    MetadataCatalog.get(PANOPTIC).set(
        panoptic_json=str(root / "panoptic.json"),
        panoptic_root=str(root / "panoptic"),
        thing_dataset_id_to_contiguous_id={i: i - 1 for i in range(1, THINGS + 1)},
        stuff_dataset_id_to_contiguous_id={THINGS + i: i - 1 for i in range(1, STUFF + 1)},
    )
    MetadataCatalog.get(INSTANCES).set(
        json_file=str(root / "instances.json"),
        thing_classes=[f"thing{i}" for i in range(THINGS)],
        thing_dataset_id_to_contiguous_id={i: i - 1 for i in range(1, THINGS + 1)},
    )


# ---------------------------------------------------------------------------- the timings
class Timer:
    """Seconds per named step, accumulated."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _predictions(images, seed: int):
    """The same predicted maps on every pass (one generator per image), made one at a time."""
    for image_id, (gt_ids, gt_info) in enumerate(images):
        rng = np.random.default_rng([seed, image_id])
        yield image_id, make_panoptic_prediction(rng, gt_ids, gt_info)


def _hotcoco_in_memory(root: Path, images, seed: int, timer: Timer, step: str):
    """hotcoco's in-memory panoptic path: detection-style datasets with one RLE per segment,
    built from the decoded ground truth and the predicted maps (timed as `step`)."""
    from hotcoco import panoptic as hotcoco_panoptic

    content = json.loads((root / "panoptic.json").read_text())
    dataset_id = {(True, i - 1): i for i in range(1, THINGS + 1)}
    dataset_id.update({(False, i - 1): THINGS + i for i in range(1, STUFF + 1)})

    def add_rles(image_id, ids, segments, annotations):
        for s in segments:
            rle = mask_util.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "iscrowd": s.get("iscrowd", 0),
                    "category_id": s["category_id"],
                    "area": float(mask_util.area(rle)),
                    "segmentation": dict(rle, counts=rle["counts"].decode()),
                    "bbox": mask_util.toBbox(rle).tolist(),
                }
            )

    gt_annotations, pred_annotations = [], []
    records = {r["image_id"]: r for r in content["annotations"]}
    for image_id, (pred_ids, segments) in _predictions(images, seed):
        with timer(step):
            record = records[image_id]
            gt_ids = decode_panoptic_png(str(root / "panoptic" / record["file_name"]))
            add_rles(image_id, gt_ids, record["segments_info"], gt_annotations)
            segments = [
                dict(s, category_id=dataset_id[s["isthing"], s["category_id"]]) for s in segments
            ]
            add_rles(image_id, pred_ids.numpy(), segments, pred_annotations)
    base = {"images": content["images"], "categories": content["categories"]}
    with timer(step):
        evaluation = hotcoco_panoptic.PanopticEval(
            dict(base, annotations=gt_annotations), dict(base, annotations=pred_annotations)
        )
        evaluation.evaluate()
    return evaluation


def benchmark_pq(root: Path, images, seed: int, timer: Timer) -> dict:
    from hotcoco import panoptic as hotcoco_panoptic

    gt_paths = [str(root / "panoptic" / f"{i}.png") for i in range(len(images))]
    with timer(DECODE_OPENCV):
        for path in gt_paths:
            decode_panoptic_png(path)
    with timer(DECODE_PIL):
        for path in gt_paths:
            rgb2id(np.array(Image.open(path), dtype=np.uint32))

    with timer(READ_OPENCV):
        for path in gt_paths:
            cv2.imread(path, cv2.IMREAD_UNCHANGED)

    detectron2 = COCOPanopticEvaluator(PANOPTIC, str(root / "d2"))
    with timer(f"PQ: {D2SEG}, construction (loads the numba kernel: once per process)"):
        ours = FastCOCOPanopticEvaluator(PANOPTIC)
    evaluators = {  # run in this order
        "Detectron2 COCOPanopticEvaluator": detectron2,
        D2SEG: ours,
        "d2seg, NumPy counting (numba not installed)": FastCOCOPanopticEvaluator(
            PANOPTIC, counting="numpy"
        ),
        "d2seg, output_dir (writes the PNGs)": FastCOCOPanopticEvaluator(
            PANOPTIC, str(root / "d2seg")
        ),
    }
    results = {}
    for name, evaluator in evaluators.items():  # one whole evaluation after the other
        evaluator.reset()
        for image_id, (pred_ids, segments) in _predictions(images, seed):
            inputs = [{"image_id": image_id, "file_name": f"{image_id}.jpg"}]
            with timer(f"PQ: {name}"):
                evaluator.process(inputs, [{"panoptic_seg": (pred_ids, segments)}])
        with timer(f"PQ: {name}"):
            results[name] = evaluator.evaluate()["panoptic_seg"]
    ours = ours.pq_results

    written = root / "d2seg" / "predictions.json"
    with timer("PQ: hotcoco PanopticEval on the PNG files (files already written)"):
        file_mode = hotcoco_panoptic.PanopticEval(
            str(root / "panoptic.json"), str(written), gt_folder=str(root / "panoptic")
        )
        file_mode.evaluate()
    rle_mode = _hotcoco_in_memory(
        root, images, seed, timer, "PQ: hotcoco PanopticEval on per-segment RLEs of the maps"
    )

    # panopticapi's own per-category counts on the files d2seg wrote (not timed)
    content = json.loads((root / "panoptic.json").read_text())
    pairs = list(zip(content["annotations"], json.loads(written.read_text())["annotations"]))
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute_multi_core(
            pairs,
            str(root / "panoptic"),
            str(root / "d2seg" / "predictions"),
            {c["id"]: c for c in content["categories"]},
        )
    counts = {"d2seg": {c: (v["tp"], v["fp"], v["fn"]) for c, v in ours["per_class"].items()}}
    counts["panopticapi"] = {
        c: (reference.pq_per_cat[c].tp, reference.pq_per_cat[c].fp, reference.pq_per_cat[c].fn)
        for c in counts["d2seg"]
    }
    for name, run in (("hotcoco files", file_mode), ("hotcoco RLE", rle_mode)):
        per_class = run.results()["per_class"]
        counts[name] = {
            c: (per_class[c]["tp"], per_class[c]["fp"], per_class[c]["fn"]) for c in counts["d2seg"]
        }
    d2 = results["Detectron2 COCOPanopticEvaluator"]
    return {
        "PQ": {name: r["PQ"] for name, r in results.items()},
        "max |PQ/SQ/RQ difference| d2seg (every variant) vs Detectron2 (percent)": max(
            abs(results[name][k] - v) for name in evaluators for k, v in d2.items()
        ),
        "TP/FP/FN identical to panopticapi": {
            name: c == counts["panopticapi"] for name, c in counts.items()
        },
        "segments": sum(len(info) for _, info in images),
    }


def benchmark_ap(images, rng, timer: Timer, per_image: int) -> dict:
    reference = FastCOCOEvaluator(INSTANCES, eval_backend="pycocotools", use_fast_impl=False)
    reference.reset()
    for image_id, (gt_ids, gt_info) in enumerate(images):
        instances = make_instances(rng, gt_ids, gt_info, per_image)
        with timer("COCO: process() (Detectron2's, shared)"):
            reference.process([{"image_id": image_id}], [{"instances": instances}])
    predictions = reference._predictions
    detections = sum(len(p["instances"]) for p in predictions)
    engines = {
        "Detectron2 + pycocotools": {"eval_backend": "pycocotools", "use_fast_impl": False},
        "Detectron2 + COCOeval_opt": {"eval_backend": "pycocotools", "use_fast_impl": True},
        "d2seg + hotcoco": {"eval_backend": "hotcoco"},
    }
    if COCOeval_opt.__module__.startswith("pycocotools"):
        del engines["Detectron2 + COCOeval_opt"]  # the C++ extension is not built
    results = {}
    for name, kwargs in engines.items():
        evaluator = None  # the previous engine's predictions are freed outside the timers
        gc.collect()
        with timer(f"COCO: {name}, construction (pycocotools loads the GT json)"):
            evaluator = FastCOCOEvaluator(INSTANCES, **kwargs)
        if kwargs["eval_backend"] == "hotcoco":
            with timer(f"COCO: {name}, hotcoco loads the GT json (on the first evaluate)"):
                evaluator._load_hotcoco_gt()
        for task in ("bbox", "segm"):
            evaluator._tasks = (task,)
            evaluator._predictions = copy.deepcopy(predictions)
            with timer(f"COCO {task} AP: {name}, evaluate()"):
                results[(task, name)] = evaluator.evaluate()[task]
    differences = {}
    for task in ("bbox", "segm"):
        reference_results = results[(task, "Detectron2 + pycocotools")]
        for name in engines:
            differences[f"{task}: {name}"] = max(
                abs(results[(task, name)][k] - v)
                for k, v in reference_results.items()
                if not np.isnan(v)
            )
    return {
        "detections": detections,
        "AP": {f"{t}: {n}": r["AP"] for (t, n), r in results.items()},
        "max |AP difference| vs pycocotools (percent, all keys incl. per class)": differences,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--segments", type=int, default=30, help="ground-truth segments per image")
    parser.add_argument("--detections", type=int, default=12, help="detections per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the evaluators' tables; the warnings stay
    rng = np.random.default_rng(args.seed)
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="d2seg_eval_speed_") as tmp:
        root = Path(tmp)
        images = [make_ground_truth(rng, args.segments) for _ in range(args.images)]
        write_ground_truth(root, images)
        pq = benchmark_pq(root, images, args.seed, timer)
        ap = benchmark_ap(images, rng, timer, args.detections)

    s = timer.seconds
    print(
        f"{args.images} images {WIDTH} x {HEIGHT}, {pq['segments']} ground-truth segments, "
        f"{ap['detections']} detections; torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| step | seconds |\n| --- | --- |")
    for name, seconds in s.items():
        print(f"| {name} | {seconds:.2f} |")
    d2, ours = s["PQ: Detectron2 COCOPanopticEvaluator"], s[f"PQ: {D2SEG}"]
    floor = s[DECODE_OPENCV]
    print(
        f"\nPQ: d2seg {d2 / ours:.1f}x faster than Detectron2's evaluator "
        f"({d2 / s['PQ: d2seg, output_dir (writes the PNGs)']:.1f}x when writing the PNGs, "
        f"{d2 / s['PQ: d2seg, NumPy counting (numba not installed)']:.1f}x without numba); "
        f"{ours / floor:.2f}x the OpenCV GT-decode floor ({ours / s[READ_OPENCV]:.2f}x the "
        f"bare imread), {ours / s[DECODE_PIL]:.2f}x the PIL one"
    )
    for task in ("bbox", "segm"):
        base = s[f"COCO {task} AP: Detectron2 + pycocotools, evaluate()"]
        fast = s[f"COCO {task} AP: d2seg + hotcoco, evaluate()"]
        line = f"COCO {task} AP, evaluate(): hotcoco {base / fast:.1f}x faster than pycocotools"
        if f"COCO {task} AP: Detectron2 + COCOeval_opt, evaluate()" in s:
            opt = s[f"COCO {task} AP: Detectron2 + COCOeval_opt, evaluate()"]
            line += f", {opt / fast:.1f}x faster than COCOeval_opt"
        print(line)

    def total(name: str) -> float:
        return sum(v for k, v in s.items() if k.startswith("COCO") and name in k)

    base, fast = total("Detectron2 + pycocotools"), total("d2seg + hotcoco")
    process = s["COCO: process() (Detectron2's, shared)"]
    print(
        f"COCO bbox + segm with the GT loading: {base / fast:.1f}x faster than pycocotools; "
        f"with process() too: {(process + base) / (process + fast):.1f}x"
    )
    print("\nchecks:", json.dumps({"PQ": pq, "AP": ap}, indent=1, default=str))


if __name__ == "__main__":
    main()
