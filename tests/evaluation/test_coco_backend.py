"""COCO box / mask AP on hotcoco equals pycocotools' (the 12 numbers, the precision / recall
arrays and the per-category table) on randomized detections, through Detectron2's evaluator;
the backend is chosen by TEST.EVAL_BACKEND and named in the log."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging

import hotcoco
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import d2seg.evaluation.coco_backend as coco_backend
from d2seg.config import load_config
from d2seg.evaluation import MaskScoringCOCOEvaluator, build_evaluator
from d2seg.evaluation.coco_backend import (
    FastCOCOEvaluator,
    evaluate_on_hotcoco,
    hotcoco_in_detectron2,
    resolve_eval_backend,
)
from tests.helpers.configs import CONFIG_ROOT, CPU

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "bird"}]
HEIGHT, WIDTH = 48, 64


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _random_box_mask(rng, near=None) -> np.ndarray:
    """A filled ellipse; with `near`, a jittered copy of that mask."""
    if near is not None:
        return np.roll(near, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    cy, cx = rng.integers(4, HEIGHT - 4), rng.integers(4, WIDTH - 4)
    ry, rx = rng.integers(2, 18), rng.integers(2, 24)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _random_dataset(rng, tmp_path, name: str, num_images: int = 14):
    """A COCO json (image 1 without ground truth, crowd regions) registered as `name`, and
    model outputs per image: jittered copies of the ground truth, wrong classes, false
    positives, scores rounded to 0.1 (ties), 150 detections on image 2 (the 100 cut-off), none
    on the last image."""
    annotations, outputs = [], {}
    for image_id in range(1, num_images + 1):
        gt_masks = (
            [] if image_id == 1 else [_random_box_mask(rng) for _ in range(rng.integers(0, 7))]
        )
        for mask in gt_masks:
            rle = _rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "iscrowd": int(rng.random() < 0.15),
                    "category_id": int(rng.choice([1, 3, 7])),
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": mask_util.toBbox(rle).tolist(),
                }
            )
        masks, classes = [], []
        for mask in gt_masks:
            for _ in range(rng.integers(0, 4)):
                masks.append(_random_box_mask(rng, near=mask))
                classes.append(int(rng.integers(0, 3)))
        extra = 150 if image_id == 2 else int(rng.integers(0, 4))
        for _ in range(0 if image_id == num_images else extra):
            masks.append(_random_box_mask(rng))
            classes.append(int(rng.integers(0, 3)))
        outputs[image_id] = _instances(rng, masks, classes)
    path = tmp_path / f"{name}.json"
    images = [
        {"id": i, "height": HEIGHT, "width": WIDTH, "file_name": f"{i}.jpg"}
        for i in range(1, num_images + 1)
    ]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    MetadataCatalog.get(name).set(
        json_file=str(path),
        thing_classes=[c["name"] for c in CATEGORIES],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(CATEGORIES)},
    )
    return outputs


def _instances(rng, masks, classes) -> Instances:
    instances = Instances((HEIGHT, WIDTH))
    masks = torch.from_numpy(np.array(masks, bool).reshape(-1, HEIGHT, WIDTH))
    boxes = torch.zeros(len(masks), 4)
    for k, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes[k] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    instances.pred_boxes = Boxes(boxes)
    instances.pred_masks = masks
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    instances.scores = torch.from_numpy(np.round(rng.random(len(masks)), 1)).float()
    return instances


def _evaluate(evaluator: COCOEvaluator, outputs: dict, extra=None, img_ids=None) -> dict:
    evaluator.reset()
    for image_id, instances in outputs.items():
        if extra:
            instances = extra(instances)
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate(img_ids=img_ids)


def _assert_same_results(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for task, values in reference.items():
        assert ours[task].keys() == values.keys(), task  # the 6 AP keys + AP-<class> each
        for key, value in values.items():
            assert ours[task][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, key)


@pytest.mark.parametrize("seed", range(4))
def test_ap_and_per_class_table_match_pycocotools(seed, tmp_path):
    name = f"d2seg_test_coco_backend_{seed}"
    outputs = _random_dataset(np.random.default_rng(seed), tmp_path, name)
    reference = _evaluate(
        COCOEvaluator(name, output_dir=str(tmp_path), use_fast_impl=False), outputs
    )
    ours = _evaluate(FastCOCOEvaluator(name, eval_backend="hotcoco"), outputs)
    assert set(reference) == {"bbox", "segm"} and 0 < reference["segm"]["AP"] < 100
    _assert_same_results(ours, reference)
    subset = [2, 3, 5, 8]  # evaluate(img_ids=...): Detectron2's way to score a subset
    reference_subset = _evaluate(COCOEvaluator(name, use_fast_impl=False), outputs, img_ids=subset)
    ours_subset = _evaluate(
        FastCOCOEvaluator(name, eval_backend="hotcoco"), outputs, img_ids=subset
    )
    assert reference_subset["segm"]["AP"] != pytest.approx(reference["segm"]["AP"])
    _assert_same_results(ours_subset, reference_subset)

    # all 12 numbers and the arrays, straight from pycocotools on the written results
    with open(tmp_path / "coco_instances_results.json") as f:
        results = json.load(f)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(MetadataCatalog.get(name).json_file)
        for iou_type in ("bbox", "segm"):
            task_results = copy.deepcopy(results)
            if iou_type == "segm":
                for r in task_results:
                    r.pop("bbox")
            expected = COCOeval(coco_gt, coco_gt.loadRes(task_results), iou_type)
            expected.evaluate()
            expected.accumulate()
            expected.summarize()
            got = evaluate_on_hotcoco(
                hotcoco.COCO(MetadataCatalog.get(name).json_file), results, iou_type
            )
            assert np.abs(got.stats - expected.stats).max() < 1e-6, iou_type
            for array in ("precision", "recall", "scores"):
                assert np.array_equal(got.eval[array], expected.eval[array]), (iou_type, array)


@pytest.mark.parametrize("max_dets", [50, 300, 5])
def test_custom_max_dets_match_detectron2(max_dets, tmp_path):
    """Detectron2's max_dets_per_image ([1, 10, N], AP at N through COCOevalMaxDets); below 10
    the list is not increasing and the evaluation stays on Detectron2's path."""
    name = f"d2seg_test_coco_backend_max_dets_{max_dets}"
    outputs = _random_dataset(np.random.default_rng(7), tmp_path, name)
    kwargs = {"max_dets_per_image": max_dets}
    reference = _evaluate(COCOEvaluator(name, use_fast_impl=False, **kwargs), outputs)
    ours = _evaluate(FastCOCOEvaluator(name, eval_backend="hotcoco", **kwargs), outputs)
    _assert_same_results(ours, reference)


def test_mask_scoring_protocol_on_hotcoco(tmp_path):
    """Masks ranked by `mask_scores`, boxes by `scores`: the same AP on both backends."""
    name = "d2seg_test_coco_backend_mask_scoring"
    outputs = _random_dataset(np.random.default_rng(11), tmp_path, name)

    def with_mask_scores(instances):
        instances.mask_scores = instances.scores.flip(0)
        return instances

    results = [
        _evaluate(MaskScoringCOCOEvaluator(name, eval_backend=backend), outputs, with_mask_scores)
        for backend in ("pycocotools", "hotcoco")
    ]
    _assert_same_results(results[1], results[0])
    plain = _evaluate(FastCOCOEvaluator(name, eval_backend="hotcoco"), outputs)
    assert plain["bbox"]["AP"] == pytest.approx(results[1]["bbox"]["AP"])
    assert plain["segm"]["AP"] != pytest.approx(results[1]["segm"]["AP"])


def test_keypoints_stay_on_detectron2s_path(monkeypatch):
    import detectron2.evaluation.coco_evaluation as detectron2_coco

    calls = []
    monkeypatch.setattr(
        detectron2_coco,
        "_evaluate_predictions_on_coco",
        lambda *args, **kwargs: calls.append(args[2]),
    )
    with hotcoco_in_detectron2(lambda: pytest.fail("hotcoco used for keypoints")):
        detectron2_coco._evaluate_predictions_on_coco(None, [{}], "keypoints")
    assert calls == ["keypoints"]


# ------------------------------------------------------------------------- selection
def test_backend_resolution(monkeypatch):
    assert resolve_eval_backend("auto") == "hotcoco"
    assert resolve_eval_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="TEST.EVAL_BACKEND is 'fast'"):
        resolve_eval_backend("fast")
    monkeypatch.setattr(coco_backend.importlib.util, "find_spec", lambda name: None)
    assert resolve_eval_backend("auto") == "pycocotools"
    with pytest.raises(ImportError, match=r"TEST.EVAL_BACKEND is 'hotcoco'.*fast-eval"):
        resolve_eval_backend("hotcoco")


def test_config_key_reaches_the_evaluators(synthetic_root, tmp_path):
    config = str(CONFIG_ROOT / "quickstart" / "mask_rcnn_R_18_FPN_synthetic.yaml")
    assert load_config(config, CPU).TEST.EVAL_BACKEND == "auto"
    for backend in ("hotcoco", "pycocotools"):
        cfg = load_config(
            config, [*CPU, "TEST.EVAL_BACKEND", backend, "TEST.REPORT.ENABLED", "False"]
        )
        evaluator = build_evaluator(cfg, "d2seg_synthetic_instance_val", str(tmp_path))
        assert evaluator._eval_backend == backend


def test_log_names_the_backend(tmp_path):
    name = "d2seg_test_coco_backend_log"
    outputs = _random_dataset(np.random.default_rng(3), tmp_path, name, num_images=3)
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    loggers = [
        logging.getLogger("detectron2.evaluation.coco_evaluation"),
        logging.getLogger(coco_backend.__name__),
    ]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        _evaluate(FastCOCOEvaluator(name, eval_backend="auto"), outputs)
        FastCOCOEvaluator(name, eval_backend="pycocotools", use_fast_impl=False)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    version = hotcoco.__version__
    assert f"COCO AP of {name}: hotcoco {version} (TEST.EVAL_BACKEND 'auto')" in records
    assert f"COCO segm AP with hotcoco {version}" in records
    assert f"COCO AP of {name}: Detectron2's pycocotools (TEST.EVAL_BACKEND 'pycocotools')" in (
        records
    )
