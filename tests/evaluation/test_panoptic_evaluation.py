"""FastCOCOPanopticEvaluator gives panopticapi's numbers (|difference| < 1e-9 for every class
and every aggregate, identical TP / FP / FN) on the real COCO sample, on randomized synthetic
pairs and on hand-made boundary cases, with Detectron2's COCOPanopticEvaluator's result keys,
and the same numbers under 2 processes as under 1."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from panopticapi.evaluation import PQStat, pq_compute, pq_compute_single_core
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from d2seg.data.panoptic_utils import standard_panoptic_metadata
from d2seg.evaluation.coco_backend import FastCOCOEvaluator
from d2seg.evaluation.panoptic_counting import (
    NumbaPairCounter,
    NumpyPairCounter,
    compiled_pair_kernel,
    decode_panoptic_png,
    make_pair_counter,
)
from d2seg.evaluation.panoptic_evaluation import (
    FastCOCOPanopticEvaluator,
    image_pq_stats,
    pq_from_stats,
)
from tests.helpers.gt_predictions import instances_from_record, panoptic_from_record

TOLERANCE = 1e-9  # parity bound with panopticapi and Detectron2
SAMPLE_NAME = "d2seg_test_pq_coco_sample"
# both pixel counters, where numba is installed (the fast-eval extra; `make setup` installs it)
COUNTINGS = ["numpy"] + (["numba"] if compiled_pair_kernel() is not None else [])


@pytest.fixture(params=COUNTINGS)
def counting(request) -> str:
    return request.param


# ---------------------------------------------------------------- panopticapi as the reference
def _write_png(path, ids: np.ndarray) -> None:
    Image.fromarray(id2rgb(ids)).save(path)


def _reference(gt_json, gt_folder, predictions, tmp_path) -> dict:
    """panopticapi's pq_compute on `predictions` [(annotation, id map)] written as its files."""
    pred_folder = tmp_path / "panopticapi_pred"
    pred_folder.mkdir(exist_ok=True)
    for annotation, ids in predictions:
        _write_png(pred_folder / annotation["file_name"], ids)
    with open(gt_json) as f:
        content = json.load(f)
    content["annotations"] = [annotation for annotation, _ in predictions]
    pred_json = tmp_path / "panopticapi_pred.json"
    pred_json.write_text(json.dumps(content))
    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute(str(gt_json), str(pred_json), str(gt_folder), str(pred_folder))


def _assert_same(reference: dict, ours: dict) -> None:
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == reference[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert abs(ours[group][key] - reference[group][key]) < TOLERANCE, (group, key)
    assert set(ours["per_class"]) == set(reference["per_class"])
    for category, values in reference["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][category][key] - values[key]) < TOLERANCE, category


def _assert_same_counts(pq_stat: PQStat, stats: np.ndarray, categories) -> None:
    """panopticapi's per-category TP / FP / FN (exact) and IoU sums against ours."""
    for column, category in enumerate(categories):
        reference = pq_stat.pq_per_cat[category["id"]]
        tp, fp, fn, iou = stats[:, column]
        assert (tp, fp, fn) == (reference.tp, reference.fp, reference.fn), category
        assert abs(iou - reference.iou) < TOLERANCE, category


# --------------------------------------------------------------------- the real COCO sample
@pytest.fixture(scope="module")
def sample(coco_sample):
    """The sample's panoptic ground truth, registered for the evaluators (standard metadata)."""
    gt_json = coco_sample / "panoptic_examples.json"
    content = json.loads(gt_json.read_text())
    metadata = MetadataCatalog.get(SAMPLE_NAME)
    if not metadata.get("panoptic_json"):
        metadata.set(
            panoptic_json=str(gt_json),
            panoptic_root=str(coco_sample / "panoptic_examples"),
            label_divisor=1000,
            **standard_panoptic_metadata(content["categories"]),
        )
    images = []
    for annotation in content["annotations"]:
        png = coco_sample / "panoptic_examples" / annotation["file_name"]
        ids = rgb2id(np.asarray(Image.open(png).convert("RGB")))
        images.append((annotation, ids))
    return content, images


def _without_absent(ids: np.ndarray, segments: list[dict]) -> list[dict]:
    present = set(np.unique(ids).tolist())
    return [s for s in segments if s["id"] in present]


def _perturb(name: str, annotation: dict, gt_ids: np.ndarray, content: dict):
    """Predictions made from the ground truth: (id map, segments_info with dataset ids)."""
    ids = gt_ids.astype(np.int64)
    segments = [
        {"id": s["id"], "category_id": s["category_id"]} for s in annotation["segments_info"]
    ]
    isthing = {c["id"]: c["isthing"] for c in content["categories"]}
    solid = [s for s in annotation["segments_info"] if not s["iscrowd"]]
    solid.sort(key=lambda s: -s["area"])
    new_id = int(ids.max()) + 1
    if name == "merged":  # the two largest segments become one (a category mismatch for one)
        ids[ids == solid[1]["id"]] = solid[0]["id"]
    elif name == "split":  # the largest segment's right half becomes a second segment
        x, _, w, _ = solid[0]["bbox"]
        half = (ids == solid[0]["id"]) & (np.arange(ids.shape[1]) >= x + w // 2)[None, :]
        ids[half] = new_id
        segments.append({"id": new_id, "category_id": solid[0]["category_id"]})
    elif name == "shifted":  # every segment moved 9 px right and 4 px down
        ids = np.roll(ids, (4, 9), axis=(0, 1))
    elif name == "relabeled":  # each segment gets the next category of its kind
        for segment in segments[::2]:
            same_kind = [
                c["id"]
                for c in content["categories"]
                if c["isthing"] == isthing[segment["category_id"]]
            ]
            segment["category_id"] = same_kind[
                (same_kind.index(segment["category_id"]) + 1) % len(same_kind)
            ]
    elif name == "dropped":  # the 3 smallest segments become VOID
        for segment in solid[-3:]:
            ids[ids == segment["id"]] = 0
    elif name == "added_over_void":  # all of VOID as one thing, plus a VOID-straddling box
        void = gt_ids == 0
        ids[void] = new_id
        segments.append({"id": new_id, "category_id": 1})
        rows, cols = np.nonzero(void)
        box = (slice(rows[0], rows[0] + 30), slice(max(cols[0] - 15, 0), cols[0] + 15))
        ids[box] = new_id + 1
        segments.append({"id": new_id + 1, "category_id": 3})
    elif name == "added_over_crowd":  # each crowd region as its category and as another one
        for k, crowd in enumerate(s for s in annotation["segments_info"] if s["iscrowd"]):
            x, y, w, h = crowd["bbox"]
            ids[y : y + h, x : x + w // 2] = new_id + 2 * k
            ids[y : y + h, x + w // 2 : x + w] = new_id + 2 * k + 1
            other = 1 if crowd["category_id"] != 1 else 2
            segments += [
                {"id": new_id + 2 * k, "category_id": crowd["category_id"]},
                {"id": new_id + 2 * k + 1, "category_id": other},
            ]
    else:
        assert name == "identity"
    return ids, _without_absent(ids, segments)


def _model_output(ids: np.ndarray, segments: list[dict], metadata) -> dict:
    """A Detectron2 model's `panoptic_seg`: contiguous category ids plus `isthing`."""
    things = metadata.thing_dataset_id_to_contiguous_id
    stuff = metadata.stuff_dataset_id_to_contiguous_id
    info = [
        {
            "id": s["id"],
            "isthing": s["category_id"] in things,
            "category_id": things.get(s["category_id"], stuff.get(s["category_id"])),
        }
        for s in segments
    ]
    return {"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), info)}


def _evaluate(evaluator, inputs_outputs):
    evaluator.reset()
    for inputs, outputs in inputs_outputs:
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()


PERTURBATIONS = [
    "identity",
    "merged",
    "split",
    "shifted",
    "relabeled",
    "dropped",
    "added_over_void",
    "added_over_crowd",
]


@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_parity_with_panopticapi_on_the_real_sample(sample, perturbation, counting, tmp_path):
    content, images = sample
    metadata = MetadataCatalog.get(SAMPLE_NAME)
    predictions, calls = [], []
    for annotation, gt_ids in images:
        ids, segments = _perturb(perturbation, annotation, gt_ids, content)
        predictions.append(
            (
                {
                    "image_id": annotation["image_id"],
                    "file_name": annotation["file_name"],
                    "segments_info": segments,
                },
                ids,
            )
        )
        inputs = [{"image_id": annotation["image_id"], "file_name": annotation["file_name"]}]
        calls.append((inputs, [_model_output(ids, segments, metadata)]))
    reference = _reference(metadata.panoptic_json, metadata.panoptic_root, predictions, tmp_path)
    evaluator = FastCOCOPanopticEvaluator(SAMPLE_NAME, counting=counting)
    results = _evaluate(evaluator, calls)["panoptic_seg"]
    _assert_same(reference, evaluator.pq_results)
    assert results["PQ"] == pytest.approx(100 * reference["All"]["pq"], abs=1e-7)
    if perturbation == "identity":
        assert results["PQ"] == results["PQ_th"] == results["PQ_st"] == pytest.approx(100.0)
    else:
        assert results["PQ"] < 100.0


def test_same_results_as_detectron2_evaluator(sample, tmp_path):
    """Drop-in: the same `process()` calls give Detectron2's result dict, key for key."""
    content, images = sample
    metadata = MetadataCatalog.get(SAMPLE_NAME)
    calls = []
    for annotation, gt_ids in images:
        ids, segments = _perturb("added_over_crowd", annotation, gt_ids, content)
        inputs = [{"image_id": annotation["image_id"], "file_name": annotation["file_name"]}]
        calls.append((inputs, [_model_output(ids, segments, metadata)]))
    ours = _evaluate(FastCOCOPanopticEvaluator(SAMPLE_NAME), calls)
    theirs = _evaluate(COCOPanopticEvaluator(SAMPLE_NAME, str(tmp_path)), calls)
    assert list(ours) == list(theirs) == ["panoptic_seg"]
    assert list(ours["panoptic_seg"]) == list(theirs["panoptic_seg"])
    for key, value in theirs["panoptic_seg"].items():
        assert abs(ours["panoptic_seg"][key] - value) < 1e-7, key


def test_label_divisor_outputs_match_detectron2(sample, tmp_path):
    """`segments_info` None (Panoptic-DeepLab): category * label_divisor + instance, -1 VOID."""
    content, images = sample
    metadata = MetadataCatalog.get(SAMPLE_NAME)
    contiguous = {
        **metadata.stuff_dataset_id_to_contiguous_id,
        **metadata.thing_dataset_id_to_contiguous_id,
    }
    calls = []
    for annotation, gt_ids in images:
        labels = np.full(gt_ids.shape, -1, np.int32)
        for k, segment in enumerate(annotation["segments_info"]):
            isthing = segment["category_id"] in metadata.thing_dataset_id_to_contiguous_id
            instance = 999 - k if isthing else 0  # 999: the last id below label_divisor
            labels[gt_ids == segment["id"]] = contiguous[segment["category_id"]] * 1000 + instance
        labels[:, :40] = -1  # a VOID band cuts into some segments
        inputs = [{"image_id": annotation["image_id"], "file_name": annotation["file_name"]}]
        calls.append((inputs, [{"panoptic_seg": (torch.from_numpy(labels), None)}]))
    ours = _evaluate(FastCOCOPanopticEvaluator(SAMPLE_NAME), calls)["panoptic_seg"]
    theirs = _evaluate(COCOPanopticEvaluator(SAMPLE_NAME, str(tmp_path)), calls)["panoptic_seg"]
    assert ours["PQ"] < 100.0
    for key, value in theirs.items():
        assert abs(ours[key] - value) < 1e-7, key


def test_writes_submission_files_atomically(sample, tmp_path):
    """With output_dir: predictions.json + predictions/*.png, which panopticapi reads with its
    default folder and scores the same; a second run replaces them and leaves nothing else."""
    content, images = sample
    metadata = MetadataCatalog.get(SAMPLE_NAME)
    calls = []
    for annotation, gt_ids in images:
        ids, segments = _perturb("split", annotation, gt_ids, content)
        inputs = [
            {
                "image_id": annotation["image_id"],
                "file_name": f"/images/{annotation['file_name'][:-4]}.jpg",
            }
        ]
        calls.append((inputs, [_model_output(ids, segments, metadata)]))
    evaluator = FastCOCOPanopticEvaluator(SAMPLE_NAME, str(tmp_path / "out"))
    for _ in range(2):
        _evaluate(evaluator, calls)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "predictions",
        "predictions.json",
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir()) == sorted(
        a["file_name"] for a in content["annotations"]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(
            metadata.panoptic_json,
            str(tmp_path / "out" / "predictions.json"),
            metadata.panoptic_root,
        )
    _assert_same(reference, evaluator.pq_results)
    no_output = FastCOCOPanopticEvaluator(SAMPLE_NAME)
    _evaluate(no_output, calls)
    assert "png" not in no_output._predictions[0]


def test_cityscapes_matches_detectron2_evaluator(cityscapes_root, tmp_path):
    """Cityscapes panoptic files made by cityscapesscripts (crowd segments, Cityscapes ids),
    ground truth with one segment dropped per image: Detectron2's (panopticapi's) numbers."""
    from d2seg.data.datasets.cityscapes import (
        cityscapes_panoptic_metadata,
        load_cityscapes_panoptic_split,
    )
    from tests.helpers.scripts import load_script

    prepare = load_script("datasets/prepare_cityscapes.py")
    prepare.create_train_id_label_images(str(cityscapes_root), ["val"])  # the loader wants them
    prepare.create_panoptic_images(str(cityscapes_root), ["val"])  # cityscapesscripts' own
    gt = cityscapes_root / "gtFine"
    root, gt_json = gt / "cityscapes_panoptic_val", gt / "cityscapes_panoptic_val.json"
    records = load_cityscapes_panoptic_split(
        str(cityscapes_root / "leftImg8bit" / "val"), str(gt / "val"), str(root), str(gt_json)
    )
    name = "d2seg_test_pq_cityscapes_val"
    if not MetadataCatalog.get(name).get("panoptic_json"):
        MetadataCatalog.get(name).set(
            panoptic_root=str(root),
            panoptic_json=str(gt_json),
            label_divisor=1000,
            **cityscapes_panoptic_metadata(),
        )
    things = set(MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id.values())
    calls = []
    for record in records:
        ids = torch.from_numpy(decode_panoptic_png(record["pan_seg_file_name"]).astype(np.int32))
        segments_info = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": s["category_id"] in things}
            for s in record["segments_info"]
        ]
        dropped = segments_info.pop(len(segments_info) // 2)
        ids = torch.where(ids == dropped["id"], torch.zeros_like(ids), ids)
        calls.append(([record], [{"panoptic_seg": (ids, segments_info)}]))
    ours = _evaluate(FastCOCOPanopticEvaluator(name), calls)["panoptic_seg"]
    theirs = _evaluate(COCOPanopticEvaluator(name, str(tmp_path)), calls)["panoptic_seg"]
    assert 0 < ours["PQ"] < 100
    for key, value in theirs.items():
        assert abs(ours[key] - value) < 1e-7, key


def test_decoder_matches_panopticapi_rgb2id(sample, tmp_path):
    """RGB as panopticapi reads it, an alpha channel ignored; anything else named."""
    content, images = sample
    for annotation, gt_ids in images:
        path = f"{MetadataCatalog.get(SAMPLE_NAME).panoptic_root}/{annotation['file_name']}"
        assert np.array_equal(decode_panoptic_png(path), gt_ids)
    ids = np.array([[0, 1, 256], [65536, 16777215, 4242]])
    rgba = np.concatenate([id2rgb(ids), np.full((2, 3, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(decode_panoptic_png(str(tmp_path / "rgba.png")), ids)
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="gray.png' is not an 8-bit RGB"):
        decode_panoptic_png(str(tmp_path / "gray.png"))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        decode_panoptic_png(str(tmp_path / "missing.png"))


# ------------------------------------------------------------- randomized synthetic pairs
CATEGORIES = [  # things and stuff, and category 9 that no segment ever uses
    {"id": 1, "name": "a", "isthing": 1},
    {"id": 2, "name": "b", "isthing": 1},
    {"id": 4, "name": "c", "isthing": 1},
    {"id": 5, "name": "sky", "isthing": 0},
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 9, "name": "unused", "isthing": 0},
]
USED = [1, 2, 4, 5, 7]


def _random_pair(rng, height=36, width=48):
    """A ground-truth map (stuff bands, things, crowd, VOID, an id listed nowhere) and a
    prediction made from it with shifted, relabeled, merged, dropped and added segments."""
    gt = np.zeros((height, width), np.int64)
    ids = iter(rng.choice(np.arange(1, 1 << 24), size=64, replace=False).tolist())
    segments = []

    def paint(target, mask, category, listed=True, **extra):
        segment_id = next(ids)
        target[mask] = segment_id
        if listed:
            segments.append({"id": segment_id, "category_id": category, **extra})

    yy, xx = np.mgrid[:height, :width]
    cut = rng.integers(5, height - 5)
    paint(gt, yy < cut, 5, iscrowd=0)
    paint(gt, (yy >= cut) & (xx > rng.integers(0, 10)), 7, iscrowd=0)

    def box(max_height, max_width):
        y0, x0 = rng.integers(0, height - 2), rng.integers(0, width - 2)
        return (
            (yy >= y0)
            & (yy < y0 + rng.integers(1, max_height))
            & (xx >= x0)
            & (xx < x0 + rng.integers(1, max_width))
        )

    for _ in range(rng.integers(1, 9)):
        paint(gt, box(16, 20), int(rng.choice([1, 2, 4])), iscrowd=int(rng.random() < 0.2))
    if rng.random() < 0.5:
        gt[rng.integers(0, height) :, : rng.integers(1, 8)] = 0  # VOID
    if rng.random() < 0.2:
        paint(gt, (yy < 3) & (xx > width - 6), 1, listed=False)  # an id listed nowhere
    areas = dict(zip(*np.unique(gt, return_counts=True)))
    gt_segments = [dict(s, area=int(areas[s["id"]])) for s in segments if s["id"] in areas]

    pred = np.where(np.isin(gt, [s["id"] for s in gt_segments]), gt, 0)
    pred_segments = [{"id": s["id"], "category_id": s["category_id"]} for s in gt_segments]
    for segment in pred_segments:
        roll = rng.random()
        mask = pred == segment["id"]
        if roll < 0.25:  # shift by a few pixels: IoU around the 0.5 boundary
            pred[mask] = 0 if rng.random() < 0.5 else pred_segments[0]["id"]
            pred[np.roll(mask, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))] = segment["id"]
        elif roll < 0.35:
            segment["category_id"] = int(rng.choice(USED))
        elif roll < 0.45:
            pred[mask] = pred_segments[int(rng.integers(len(pred_segments)))]["id"]
        elif roll < 0.5:
            pred[mask] = 0
    segments = []
    for _ in range(rng.integers(0, 4)):  # added segments, some over VOID / crowd
        paint(pred, box(12, 12), int(rng.choice(USED)))
    pred_segments += segments
    return gt, gt_segments, pred, _without_absent(pred, pred_segments)


def test_randomized_pairs_match_panopticapi(tmp_path):
    """200 random pairs, one by one through panopticapi's own per-image code (exact TP / FP / FN
    per category), then all together through its averaging; every pixel counter."""
    rng = np.random.default_rng(2024)
    category_index = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    categories = {c["id"]: c for c in CATEGORIES}
    counters = [make_pair_counter(counting) for counting in COUNTINGS]
    total_reference, total = PQStat(), np.zeros((4, len(CATEGORIES)))
    seen_crowd = seen_boundary = 0
    for seed in range(200):
        gt, gt_segments, pred, pred_segments = _random_pair(rng)
        _write_png(tmp_path / "gt.png", gt)
        _write_png(tmp_path / "pred.png", pred)
        annotation = {"image_id": seed, "file_name": "gt.png", "segments_info": gt_segments}
        prediction = {
            "image_id": seed,
            "file_name": "pred.png",
            "segments_info": [dict(s) for s in pred_segments],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            reference = pq_compute_single_core(
                0, [(annotation, prediction)], str(tmp_path), str(tmp_path), categories
            )
        for counter in counters:
            stats = image_pq_stats(gt, gt_segments, pred, pred_segments, category_index, counter)
            _assert_same_counts(reference, stats, CATEGORIES)
        total_reference += reference
        total += stats
        seen_crowd += any(s["iscrowd"] for s in gt_segments)
        seen_boundary += stats[0].sum() > 0 and stats[1].sum() > 0
    assert seen_crowd > 20 and seen_boundary > 60  # the generator covers the cases
    reference = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        reference[name], per_class = total_reference.pq_average(categories, isthing)
        reference.setdefault("per_class", per_class)
    ours = pq_from_stats(total, CATEGORIES)
    _assert_same(reference, ours)
    assert ours["per_class"][9]["pq"] == 0.0 and ours["All"]["n"] == 5  # unused: in no mean


# ----------------------------------------------------------------- pinned boundary cases
A, B = 1, 2  # thing categories


def _strip(*runs):
    """A 1 x N map from (length, id) runs."""
    return np.concatenate([np.full(n, i, np.int64) for n, i in runs])[None, :]


def _gt(*segments):
    return [
        {"id": i, "category_id": c, "iscrowd": crowd, "area": area}
        for i, c, crowd, area in segments
    ]


BOUNDARY_CASES = {
    # IoU = 4 / 8 = 0.5 exactly: no match (strict >); the prediction is a false positive
    "iou_half_is_no_match": (
        _strip((8, 1), (8, 0)),
        _gt((1, A, 0, 8)),
        _strip((4, 1), (12, 0)),
        [(1, A)],
        (0, 1, 1),
    ),
    "iou_above_half_matches": (
        _strip((8, 1), (8, 0)),
        _gt((1, A, 0, 8)),
        _strip((5, 1), (11, 0)),
        [(1, A)],
        (1, 0, 0),
    ),
    # 4 of the prediction's 8 pixels on VOID leave the union: 4 / (8 + 6 - 4 - 4) > 0.5
    "void_leaves_the_union": (
        _strip((6, 1), (10, 0)),
        _gt((1, A, 0, 6)),
        _strip((2, 0), (8, 1), (6, 0)),
        [(1, A)],
        (1, 0, 0),
    ),
    "category_mismatch": (
        _strip((8, 1), (8, 0)),
        _gt((1, A, 0, 8)),
        _strip((8, 1), (8, 0)),
        [(1, B)],
        (0, 1, 1),
    ),
    # an unmatched prediction with exactly half its pixels on VOID is a false positive ...
    "half_on_void_is_fp": (
        _strip((8, 1), (8, 0)),
        _gt((1, A, 0, 8)),
        _strip((6, 0), (4, 1), (6, 0)),
        [(1, B)],
        (0, 1, 1),
    ),
    # ... with more than half, it is ignored
    "over_half_on_void_ignored": (
        _strip((8, 1), (8, 0)),
        _gt((1, A, 0, 8)),
        _strip((7, 0), (4, 1), (5, 0)),
        [(1, B)],
        (0, 0, 1),
    ),
    # crowd of the prediction's category counts with VOID; of another category it does not
    "over_crowd_ignored": (
        _strip((8, 3), (8, 0)),
        _gt((3, A, 1, 8)),
        _strip((4, 1), (12, 0)),
        [(1, A)],
        (0, 0, 0),
    ),
    "crowd_of_other_category": (
        _strip((8, 3), (8, 0)),
        _gt((3, B, 1, 8)),
        _strip((4, 1), (12, 0)),
        [(1, A)],
        (0, 1, 0),
    ),
    # of two crowd segments of one category, only the last listed counts (panopticapi's rule)
    "only_the_last_crowd_counts": (
        _strip((8, 3), (8, 4)),
        _gt((3, A, 1, 8), (4, A, 1, 8)),
        _strip((4, 1), (12, 0)),
        [(1, A)],
        (0, 1, 0),
    ),
}


@pytest.mark.parametrize("case", sorted(BOUNDARY_CASES))
def test_boundaries(case, counting, tmp_path):
    gt, gt_segments, pred, pred_pairs, (tp, fp, fn) = BOUNDARY_CASES[case]
    pred_segments = [{"id": i, "category_id": c} for i, c in pred_pairs]
    category_index = {A: 0, B: 1}
    counter = make_pair_counter(counting)
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, category_index, counter)
    assert (stats[0].sum(), stats[1].sum(), stats[2].sum()) == (tp, fp, fn)
    _write_png(tmp_path / "gt.png", gt)
    _write_png(tmp_path / "pred.png", pred)
    categories = {A: {"id": A, "isthing": 1}, B: {"id": B, "isthing": 1}}
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute_single_core(
            0,
            [
                (
                    {"image_id": 0, "file_name": "gt.png", "segments_info": gt_segments},
                    {"image_id": 0, "file_name": "pred.png", "segments_info": pred_segments},
                )
            ],
            str(tmp_path),
            str(tmp_path),
            categories,
        )
    _assert_same_counts(reference, stats, list(categories.values()))


def test_many_segments_take_the_wide_path(counting, tmp_path):
    """302 x 302 (ground truth, prediction) index pairs exceed the uint16 combined index: the
    intp path gives panopticapi's counts too (categories agree on every 6th segment)."""
    gt = pred = _strip(*[(2, 1 + k) for k in range(300)])
    gt_segments = _gt(*[(1 + k, A if k % 3 else B, int(k % 7 == 0), 2) for k in range(300)])
    pred_segments = [{"id": 1 + k, "category_id": A if k % 2 else B} for k in range(300)]
    counter = make_pair_counter(counting)
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, {A: 0, B: 1}, counter)
    _write_png(tmp_path / "gt.png", gt)
    _write_png(tmp_path / "pred.png", pred)
    categories = {A: {"id": A, "isthing": 1}, B: {"id": B, "isthing": 1}}
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute_single_core(
            0,
            [
                (
                    {"image_id": 0, "file_name": "gt.png", "segments_info": gt_segments},
                    {"image_id": 0, "file_name": "pred.png", "segments_info": pred_segments},
                )
            ],
            str(tmp_path),
            str(tmp_path),
            categories,
        )
    _assert_same_counts(reference, stats, list(categories.values()))
    assert stats[0].sum() > 50 and stats[1].sum() > 50 and stats[2].sum() > 50


def test_pq_formula_and_empty_groups():
    """PQ = IoU sum / (TP + FP/2 + FN/2), SQ = IoU sum / TP, RQ = TP / (TP + FP/2 + FN/2);
    a group with no category to average is NaN, not a division error."""
    categories = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 1}]
    stats = np.array([[3, 0], [1, 2], [2, 0], [2.4, 0.0]])  # rows TP, FP, FN, IoU sum
    results = pq_from_stats(stats, categories)
    assert results["per_class"][1]["pq"] == pytest.approx(2.4 / 4.5)
    assert results["per_class"][1]["sq"] == pytest.approx(0.8)
    assert results["per_class"][1]["rq"] == pytest.approx(3 / 4.5)
    assert results["per_class"][2] == {
        "pq": 0.0,
        "sq": 0.0,
        "rq": 0.0,
        "tp": 0,
        "fp": 2,
        "fn": 0,
        "iou": 0.0,
    }
    assert results["All"]["n"] == 2 and results["Things"]["pq"] == pytest.approx(2.4 / 9)
    assert results["Stuff"]["n"] == 0 and np.isnan(results["Stuff"]["pq"])


# ------------------------------------------------------------------------- bad input
def _one(gt_pairs, pred, pred_pairs, counting="numpy", gt=None):
    gt = _strip((8, 1), (8, 0)) if gt is None else gt
    return image_pq_stats(
        gt,
        _gt(*gt_pairs),
        pred,
        [{"id": i, "category_id": c} for i, c in pred_pairs],
        {A: 0, B: 1},
        make_pair_counter(counting),
        where="image 7",
    )


@pytest.mark.parametrize(
    "pred, pred_pairs, error, message",
    [
        (_strip((8, 5), (8, 0)), [(1, A)], KeyError, r"image 7.*\[5\] are in the map but not"),
        (_strip((8, 1), (8, 0)), [(1, A), (2, A)], KeyError, r"\[2\] are in segments_info but not"),
        (_strip((8, 1), (8, 0)), [(1, 3)], KeyError, r"image 7 \(prediction\): category_id \[3\]"),
        (_strip((8, 1), (9, 0)), [(1, A)], ValueError, r"image 7: prediction is \(1, 17\)"),
        (_strip((8, 1 << 24), (8, 0)), [(1 << 24, A)], ValueError, r"\[0, 2\^24\)"),
        (_strip((8, 1), (8, 0)), [(1, A), (1, A)], ValueError, "twice"),
    ],
)
def test_bad_predictions_are_named(pred, pred_pairs, error, message, counting):
    with pytest.raises(error, match=message):
        _one([(1, A, 0, 8)], pred, pred_pairs, counting)


def test_unknown_image_is_named(sample):
    evaluator = FastCOCOPanopticEvaluator(SAMPLE_NAME)
    evaluator.reset()
    output = {"panoptic_seg": (torch.zeros(4, 4, dtype=torch.int32), [])}
    with pytest.raises(KeyError, match="image_id 123.*panoptic_examples.json"):
        evaluator.process([{"image_id": 123, "file_name": "x.jpg"}], [output])


# ------------------------------------------------------------- the pipeline and its counters
def _tiny_dataset(tmp_path, name: str) -> list[np.ndarray]:
    """Three 4 x 6 ground-truth images (two segments of category 1 each), registered as
    `name`; the second image's PNG is left out when the name says "missing"."""
    (tmp_path / "pan").mkdir()
    maps, annotations = [], []
    for image_id in range(3):
        ids = np.zeros((4, 6), np.int64)
        ids[:, :3], ids[:, 3:] = 10 + image_id, 20 + image_id
        if not (image_id == 1 and "missing" in name):
            _write_png(tmp_path / "pan" / f"{image_id}.png", ids)
        segments = [
            {"id": int(i), "category_id": 1, "iscrowd": 0, "area": 12}
            for i in (ids[0, 0], ids[0, 5])
        ]
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments}
        )
        maps.append(ids)
    categories = [{"id": 1, "name": "thing", "isthing": 1}]
    (tmp_path / "pan.json").write_text(
        json.dumps({"images": [], "annotations": annotations, "categories": categories})
    )
    MetadataCatalog.get(name).set(
        panoptic_json=str(tmp_path / "pan.json"),
        panoptic_root=str(tmp_path / "pan"),
        thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={},
    )
    return maps


def _prediction(ids: np.ndarray, listed=None) -> dict:
    listed = np.unique(ids[ids > 0]) if listed is None else listed
    segments = [{"id": int(i), "category_id": 0, "isthing": True} for i in listed]
    return {"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), segments)}


def test_each_image_is_scored_one_call_later(tmp_path, counting):
    """An image's statistics appear in the next process() call (its ground truth is read on
    the worker thread meanwhile) or in evaluate()."""
    maps = _tiny_dataset(tmp_path, f"d2seg_test_pq_pipeline_{counting}")
    evaluator = FastCOCOPanopticEvaluator(f"d2seg_test_pq_pipeline_{counting}", counting=counting)
    evaluator.reset()
    moved = maps[0].copy()
    moved[:, 3:5] = 10  # IoU 12/20 and 4/12: one TP, one FP, one FN
    evaluator.process([{"image_id": 0, "file_name": "0.jpg"}], [_prediction(moved)])
    assert "stats" not in evaluator._predictions[0]
    evaluator.process([{"image_id": 1, "file_name": "1.jpg"}], [_prediction(maps[1])])
    assert evaluator._predictions[0]["stats"][:3].sum(axis=1).tolist() == [1, 1, 1]
    evaluator.process([{"image_id": 2, "file_name": "2.jpg"}], [_prediction(maps[2])])
    results = evaluator.evaluate()["panoptic_seg"]
    assert [p["stats"][0, 0] for p in evaluator._predictions] == [1, 2, 2]  # TPs
    assert results["PQ"] == pytest.approx(100 * (0.6 + 4) / (5 + 0.5 + 0.5))


def test_reading_never_overwrites_the_image_being_scored(monkeypatch, tmp_path, counting):
    """The worker reads image k into other work arrays than those of image k - 1, which the
    calling thread scores meanwhile: scoring made slower than reading changes nothing."""
    name = f"d2seg_test_pq_buffers_{counting}"
    maps = _tiny_dataset(tmp_path, name)
    score = FastCOCOPanopticEvaluator._score_read

    def slow_score(self):
        time.sleep(0.05)  # the worker finishes reading the next image first
        score(self)

    monkeypatch.setattr(FastCOCOPanopticEvaluator, "_score_read", slow_score)
    evaluator = FastCOCOPanopticEvaluator(name, counting=counting)
    calls = [
        ([{"image_id": i, "file_name": f"{i}.jpg"}], [_prediction(m)]) for i, m in enumerate(maps)
    ]
    assert _evaluate(evaluator, calls)["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_pipeline_errors_name_their_image(tmp_path, counting):
    """An unreadable ground truth fails its own process() call, naming the file; an error
    found while counting an image names that image, in the next call or in evaluate()."""
    name = f"d2seg_test_pq_missing_{counting}"
    maps = _tiny_dataset(tmp_path, name)
    evaluator = FastCOCOPanopticEvaluator(name, counting=counting)
    evaluator.reset()
    evaluator.process([{"image_id": 0, "file_name": "0.jpg"}], [_prediction(maps[0])])
    with pytest.raises(FileNotFoundError, match=r"pan/1.png"):
        evaluator.process([{"image_id": 1, "file_name": "1.jpg"}], [_prediction(maps[1])])
    listed_absent = _prediction(maps[2], listed=[12, 22, 99])
    evaluator.process([{"image_id": 2, "file_name": "2.jpg"}], [listed_absent])
    with pytest.raises(
        KeyError, match=r"image 2: predicted segment ids \[99\] are in segments_info"
    ):
        evaluator.evaluate()


def test_counter_choice(monkeypatch, caplog, sample):
    """auto: numba where installed, else NumPy; the log names the one used."""
    import d2seg.evaluation.panoptic_counting as counting_module

    expected = NumbaPairCounter if compiled_pair_kernel() is not None else NumpyPairCounter
    assert isinstance(make_pair_counter(), expected)
    with pytest.raises(ValueError, match="unknown panoptic counting backend 'fast'"):
        make_pair_counter("fast")
    monkeypatch.setattr(counting_module, "compiled_pair_kernel", lambda: None)
    assert isinstance(make_pair_counter("auto"), NumpyPairCounter)
    with pytest.raises(ImportError, match=r"d2seg\[fast-eval\]"):
        make_pair_counter("numba")
    _, images = sample
    annotation, gt_ids = images[0]
    evaluator = FastCOCOPanopticEvaluator(SAMPLE_NAME)
    segments = [
        {"id": s["id"], "category_id": s["category_id"]} for s in annotation["segments_info"]
    ]
    output = _model_output(gt_ids, segments, MetadataCatalog.get(SAMPLE_NAME))
    with caplog.at_level(logging.INFO, logger="d2seg.evaluation.panoptic_evaluation"):
        _evaluate(
            evaluator, [([{"image_id": annotation["image_id"], "file_name": "x.jpg"}], [output])]
        )
    assert "PQ from the in-memory maps of 1 images (NumPy + OpenCV)" in caplog.text


# ------------------------------------------------------------------------ distributed
PANOPTIC_VAL, INSTANCE_VAL = "d2seg_synthetic_panoptic_val", "d2seg_synthetic_instance_val"
IMAGES = 24  # of each split


def _evaluate_synthetic(rank: int, world_size: int) -> dict:
    """Both d2seg evaluators over this rank's share of the synthetic val splits (ground truth
    with every other image perturbed), through reset / process / evaluate."""
    panoptic = FastCOCOPanopticEvaluator(PANOPTIC_VAL)
    coco = FastCOCOEvaluator(INSTANCE_VAL, output_dir=None, eval_backend="hotcoco")
    panoptic.reset()
    coco.reset()
    for k, record in enumerate(DatasetCatalog.get(PANOPTIC_VAL)[:IMAGES][rank::world_size]):
        ids, segments_info = panoptic_from_record(record)
        if (k * world_size + rank) % 2:
            ids = torch.where(ids == segments_info[0]["id"], torch.zeros_like(ids), ids)
            segments_info = segments_info[1:]
        panoptic.process(
            [{"image_id": record["image_id"], "file_name": record["file_name"]}],
            [{"panoptic_seg": (ids, segments_info)}],
        )
    for k, record in enumerate(DatasetCatalog.get(INSTANCE_VAL)[:IMAGES][rank::world_size]):
        instances = instances_from_record(record)
        instances.scores = torch.linspace(1.0, 0.2, len(instances))
        if (k * world_size + rank) % 3 == 0:
            instances.pred_classes = (instances.pred_classes + 1) % 3
        coco.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    return {"panoptic": panoptic.evaluate(), "coco": coco.evaluate()}


def _distributed_worker(output_path: str) -> None:
    from detectron2.utils import comm

    results = _evaluate_synthetic(comm.get_rank(), comm.get_world_size())
    if comm.is_main_process():
        with open(output_path, "wb") as f:
            pickle.dump(results, f)
    # shut gloo down before the interpreter does: its threads, left to exit-time destructors,
    # once aborted a worker ("terminate called without an active exception") after the results
    comm.synchronize()
    torch.distributed.destroy_process_group()


def test_two_processes_give_the_numbers_of_one(synthetic_root, tmp_path):
    from detectron2.engine import launch

    one = _evaluate_synthetic(0, 1)
    launch(_distributed_worker, 2, dist_url="auto", args=(str(tmp_path / "two.pkl"),))
    two = pickle.loads((tmp_path / "two.pkl").read_bytes())
    assert 0 < one["panoptic"]["panoptic_seg"]["PQ"] < 100
    assert 0 < one["coco"]["segm"]["AP"] < 100
    for task in ("panoptic", "coco"):
        for group, values in one[task].items():
            assert values.keys() == two[task][group].keys()
            for key, value in values.items():
                assert two[task][group][key] == pytest.approx(value, abs=1e-9, nan_ok=True), (
                    group,
                    key,
                )
