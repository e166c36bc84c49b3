"""report.html for every evaluator type d2seg registers, on tiny synthetic data: ground truth
fed back as predictions (some images spoiled), the page's numbers checked against the
evaluators' results."""

from __future__ import annotations

import math
import os
from functools import partial
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from d2seg.config import load_config
from d2seg.evaluation import ReportEvaluator, build_evaluator
from d2seg.evaluation.report import ConfusionPanel, ScoredImage, pr_curves
from d2seg.evaluation.report.gallery import Gallery, split_gallery
from d2seg.modeling.postprocessing.parsing import PartProbabilities
from tests.helpers.configs import CONFIG_ROOT, CPU
from tests.helpers.gt_predictions import instances_from_record, panoptic_from_record
from tests.helpers.scripts import load_script

GALLERY = 3


class ReportPage(HTMLParser):
    """What the tests read from a report: every ``data-metric`` cell, image, PR-curve AP,
    gallery caption and table caption."""

    def __init__(self, text: str):
        super().__init__()
        self.metrics: dict[str, float] = {}
        self.values: list[float] = []
        self.images: list[str] = []
        self.curve_aps: list[float] = []
        self.captions: list[str] = []
        self.tables: list[str] = []
        self.headings: list[str] = []
        self._text_target: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-metric" in attrs:
            self.metrics[attrs["data-metric"]] = float(attrs["data-value"])
        if "data-value" in attrs:
            self.values.append(float(attrs["data-value"]))
        if "data-ap" in attrs:
            self.curve_aps.append(float(attrs["data-ap"]))
        if tag == "img":
            self.images.append(attrs["src"])
        self._text_target = {
            "figcaption": self.captions,
            "caption": self.tables,
            "h2": self.headings,
        }.get(tag)

    def handle_data(self, data):
        if self._text_target is not None:
            self._text_target.append(data)
            self._text_target = None

    @property
    def gallery_scores(self) -> list[float]:
        return [float(c.split()[0]) for c in self.captions]


def flatten(results) -> dict[str, float]:
    return {f"{task}/{k}": v for task, metrics in results.items() for k, v in metrics.items()}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def run_report(cfg_overrides, dataset_name, pairs, output_dir: Path):
    """Evaluate (input, output) pairs through build_evaluator; (results, page, folder)."""
    cfg = load_config(
        str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"),
        CPU
        + ["OUTPUT_DIR", str(output_dir), "TEST.REPORT.GALLERY_SIZE", str(GALLERY)]
        + list(cfg_overrides),
    )
    folder = output_dir / "inference" / dataset_name
    evaluator = build_evaluator(cfg, dataset_name, str(folder))
    assert isinstance(evaluator, ReportEvaluator)
    evaluator.reset()
    for input_, output in pairs:
        evaluator.process([input_], [output])
    kept = evaluator.gallery_candidates
    assert kept <= 2 * GALLERY  # outputs kept for the gallery candidates only
    results = evaluator.evaluate()
    page = ReportPage((folder / "report.html").read_text())
    return results, page, folder, evaluator


def check_page(results, page: ReportPage, folder: Path, scores_expected: list[float] | None):
    """Every result on the page equals the evaluator's, every image exists, and the gallery
    holds the best and the worst images (scores best first, then worst first)."""
    flat = flatten(results)
    assert flat, "no results"
    for key, value in flat.items():
        assert key in page.metrics, f"{key} is not on the page"
        assert _same(page.metrics[key], float(value)), key
    for src in page.images:
        assert not os.path.isabs(src) and (folder / src).is_file(), src
    if scores_expected is not None:
        ranked = sorted(scores_expected, reverse=True)
        best = min(GALLERY, math.ceil(len(ranked) / 2))
        expected = ranked[:best] + ranked[best:][::-1][:GALLERY]
        assert page.gallery_scores == pytest.approx(expected, abs=5e-4)  # shown as %.3f
        assert len(page.images) >= 2 * len(expected)  # prediction + ground truth each


def _drop_half(instances: Instances) -> Instances:
    return instances[: len(instances) // 2]


def test_coco_instance_report(synthetic_root, tmp_path):
    name = "d2seg_synthetic_instance_val"
    pairs, expected = [], []
    for index, record in enumerate(DatasetCatalog.get(name)):
        instances = instances_from_record(record)
        total = len(instances)
        if index % 4 == 0:  # these images lose half their objects
            instances = _drop_half(instances)
        pairs.append((record, {"instances": instances}))
        expected.append(len(instances) / total)  # each kept object matched with IoU 1
    quickstart = "configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml"
    results, page, folder, evaluator = run_report(
        ["TEST.REPORT.CONFIG_FILE", quickstart], name, pairs, tmp_path
    )
    check_page(results, page, folder, expected)
    assert {"bbox/AP-circle", "segm/AP-triangle", "segm/AP-square"} <= set(page.metrics)
    assert 70.2 in page.values and 70.9 in page.values  # the README's quickstart numbers
    # PR curves: IoU 0.50, 0.75 and 0.50:0.95 per task; the mean of a curve is its AP
    assert len(page.curve_aps) == 6
    bbox_50, _, bbox_all, segm_50, _, segm_all = page.curve_aps
    assert bbox_50 == pytest.approx(results["bbox"]["AP50"], abs=1e-9)
    assert bbox_all == pytest.approx(results["bbox"]["AP"], abs=1e-9)
    assert segm_50 == pytest.approx(results["segm"]["AP50"], abs=1e-9)
    assert segm_all == pytest.approx(results["segm"]["AP"], abs=1e-9)
    assert "Training curves" not in page.headings  # no metrics.json: no curves


def test_pr_curves_average_the_categories_with_ground_truth():
    precision = np.full((10, 101, 3, 4, 3), -1.0)  # (IoU 0.50:0.05:0.95, recall, K, A, M)
    precision[:, :, 0, 0, -1] = (1 - np.arange(10) / 20)[:, None]  # 1.0 at IoU 0.5 ... 0.55
    precision[:, :, 1, 0, -1] = np.linspace(1, 0, 101)
    precision[:, :, 0, 1:, :-1] = 0.0  # other areas and maxDets: not drawn
    ramp = np.linspace(1, 0, 101)  # category 2 has no ground truth (-1): left out
    curves = dict(pr_curves(precision))
    assert curves["IoU 0.50"] == pytest.approx((1.0 + ramp) / 2)
    assert curves["IoU 0.75"] == pytest.approx((0.75 + ramp) / 2)
    assert curves["IoU 0.50:0.95"] == pytest.approx((0.775 + ramp) / 2)
    assert pr_curves(np.full((10, 101, 2, 4, 3), -1.0)) == []


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    clamped = torch.from_numpy(labels.astype(np.int64)).clamp(max=num_classes - 1)
    return torch.nn.functional.one_hot(clamped, num_classes).permute(2, 0, 1).float()


def _brute_miou(gt, pred, num_classes):
    valid = gt < num_classes
    ious = [
        ((gt == c) & (pred == c) & valid).sum() / (((gt == c) | (pred == c)) & valid).sum()
        for c in range(num_classes)
        if (((gt == c) | (pred == c)) & valid).any()
    ]
    return float(np.mean(ious))


def _semantic_pairs(records, num_classes, spoil=lambda labels: np.where(labels == 4, 3, labels)):
    """Ground-truth logits; every third image gets `spoil` applied (grass called sky)."""
    pairs, expected = [], []
    for index, record in enumerate(records):
        gt = np.asarray(Image.open(record["sem_seg_file_name"]))
        pred = np.minimum(spoil(gt) if index % 3 == 0 else gt, num_classes - 1)
        pairs.append((record, {"sem_seg": _one_hot(pred, num_classes)}))
        expected.append(_brute_miou(gt, pred, num_classes))
    return pairs, expected


def test_sem_seg_report_with_confusion_matrix(synthetic_root, tmp_path):
    name = "d2seg_synthetic_sem_seg_val"
    classes = MetadataCatalog.get(name).stuff_classes
    records = DatasetCatalog.get(name)[:12]
    pairs, expected = _semantic_pairs(records, len(classes))
    results, page, folder, evaluator = run_report([], name, pairs, tmp_path)
    check_page(results, page, folder, expected)
    assert "Confusion matrix" in page.headings and "Precision-recall" not in page.headings
    # the confusion matrix: ground truth by row, shares of the row; grass rows partly sky
    (panel,) = evaluator.gallery_source.report_panels()
    conf = panel.confusion
    shares = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    cells = page.values[-(len(classes) ** 2) :]
    assert cells == pytest.approx(shares.ravel().tolist())
    assert 0 < shares[4, 3] < 1 and shares[3, 4] == 0


def test_gallery_off_scores_nothing(synthetic_root, tmp_path):
    name = "d2seg_synthetic_sem_seg_val"
    pairs, _ = _semantic_pairs(DatasetCatalog.get(name)[:3], 6)
    results, page, folder, evaluator = run_report(
        ["TEST.REPORT.GALLERY", "False"], name, pairs, tmp_path
    )
    check_page(results, page, folder, None)
    assert evaluator.gallery_source is None  # no evaluator asked for scores
    assert evaluator.gallery_candidates == 0
    assert "Gallery" not in page.headings and not page.images


def test_report_off_returns_the_evaluators_alone(synthetic_root, tmp_path):
    cfg = load_config(
        str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"), CPU + ["TEST.REPORT.ENABLED", "False"]
    )
    evaluator = build_evaluator(cfg, "d2seg_synthetic_sem_seg_val", str(tmp_path))
    assert isinstance(evaluator, SemSegEvaluator)


def test_panoptic_report_with_things_ap(synthetic_root, tmp_path):
    """Two evaluators on one dataset: PQ (with its per-category table) and things AP."""
    name = "d2seg_synthetic_panoptic_val"
    instance_records = {
        r["image_id"]: r for r in DatasetCatalog.get("d2seg_synthetic_instance_val")
    }
    pairs, expected = [], []
    for index, record in enumerate(DatasetCatalog.get(name)[:10]):
        ids, segments = panoptic_from_record(record)
        if index % 3 == 0:  # the first segment missed: one FN, the rest matched exactly
            ids = torch.where(ids == segments[0]["id"], torch.zeros_like(ids), ids)
            lost, segments = segments[0], segments[1:]
        output = {
            "panoptic_seg": (ids, segments),
            "instances": instances_from_record(instance_records[record["image_id"]]),
        }
        pairs.append((record, output))
        # the image's PQ: 1 for each category present, except the lost one's category,
        # whose PQ is n / (n + 0.5) with n its remaining segments; crowd segments never count
        counted = [s for s in record["segments_info"] if not s["iscrowd"]]
        per_category = []
        for category in {s["category_id"] for s in counted}:
            missed = index % 3 == 0 and lost["category_id"] == category
            kept = sum(s["category_id"] == category for s in counted) - missed
            per_category.append(kept / (kept + 0.5 * missed))
        expected.append(float(np.mean(per_category)))
    results, page, folder, evaluator = run_report([], name, pairs, tmp_path)
    check_page(results, page, folder, expected)
    assert set(results) == {"panoptic_seg", "bbox", "segm"}
    panoptic = evaluator._evaluators[0]
    per_class = panoptic.pq_results["per_class"]
    pq_cells = [100 * per_class[c]["pq"] for c in sorted(per_class)]
    assert all(any(v == pytest.approx(cell) for v in page.values) for cell in pq_cells)
    assert len(page.curve_aps) == 6


def _parsing_output(record, num_classes, resolution=32):
    """Each person's ground-truth part map, cropped to its box, as one-hot probabilities."""
    boxes, probabilities = [], []
    for annotation in record["annotations"]:
        box = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
        x0, y0, x1, y1 = (round(v) for v in box)
        parts = np.asarray(Image.open(annotation["parsing_file_name"]))[y0:y1, x0:x1]
        grid = np.asarray(
            Image.fromarray(parts).resize((resolution, resolution), Image.Resampling.NEAREST)
        )
        probabilities.append(_one_hot(grid, num_classes))
        boxes.append([x0, y0, x1, y1])
    instances = Instances((record["height"], record["width"]))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.scores = torch.ones(len(boxes))
    instances.parsing_scores = torch.ones(len(boxes))
    instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
    instances.pred_parsing = PartProbabilities(torch.stack(probabilities))
    return {"instances": instances}


def test_parsing_report_with_part_confusion(synthetic_root, tmp_path):
    name = "d2seg_synthetic_parsing_val"
    classes = MetadataCatalog.get(name).parsing_classes
    records = DatasetCatalog.get(name)[:6]
    pairs = [(r, _parsing_output(r, len(classes))) for r in records]
    results, page, folder, evaluator = run_report([], name, pairs, tmp_path)
    check_page(results, page, folder, None)
    assert {f"parsing/IoU-{classes[1]}", "parsing/mIoU", "bbox/AP"} <= set(page.metrics)
    assert "Confusion matrix" in page.headings
    scores = page.gallery_scores
    assert len(scores) == 6 and all(0 < s <= 1 for s in scores)
    assert scores[:3] == sorted(scores[:3], reverse=True) and min(scores[:3]) >= max(scores[3:])


@pytest.fixture(scope="module")
def cityscapes_datasets(cityscapes_root):
    """The miniature Cityscapes val split registered as instance and semantic datasets."""
    from d2seg.data.datasets.cityscapes import (
        load_cityscapes_instances,
        load_cityscapes_panoptic_split,
        load_cityscapes_semantic,
    )

    prepare = load_script("datasets/prepare_cityscapes.py")
    prepare.create_train_id_label_images(str(cityscapes_root), ["val"])
    prepare.create_panoptic_images(str(cityscapes_root), ["val"])
    image_dir = str(cityscapes_root / "leftImg8bit" / "val")
    gt_dir = str(cityscapes_root / "gtFine" / "val")
    panoptic_root = str(cityscapes_root / "gtFine" / "cityscapes_panoptic_val")
    panoptic = partial(load_cityscapes_panoptic_split, panoptic_root=panoptic_root)
    names = {}
    for kind, loader in (
        ("instance_seg", load_cityscapes_instances),
        ("sem_seg", load_cityscapes_semantic),
        ("panoptic", partial(panoptic, panoptic_json=panoptic_root + ".json")),
    ):
        name = f"d2seg_test_report_cityscapes_{kind}"
        builtin = MetadataCatalog.get(f"d2seg_cityscapes_fine_{kind}_val").as_dict()
        builtin.update(name=name, image_dir=image_dir, gt_dir=gt_dir)
        if kind == "panoptic":
            builtin.update(panoptic_root=panoptic_root, panoptic_json=panoptic_root + ".json")
        DatasetCatalog.register(name, partial(loader, image_dir, gt_dir))
        MetadataCatalog.get(name).set(**{k: v for k, v in builtin.items() if k != "name"})
        names[kind] = name
    yield names
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_cityscapes_instance_report(cityscapes_datasets, tmp_path):
    name = cityscapes_datasets["instance_seg"]
    pairs, expected = [], []
    for index, record in enumerate(DatasetCatalog.get(name)):
        instances = instances_from_record(record)
        total = len(instances)
        if index % 2 == 0:
            instances = _drop_half(instances)
        pairs.append((record, {"instances": instances}))
        expected.append(len(instances) / total if total else None)
    results, page, folder, _ = run_report([], name, pairs, tmp_path)
    check_page(results, page, folder, [s for s in expected if s is not None])
    assert set(flatten(results)) == {"segm/AP", "segm/AP50"}


def test_cityscapes_semantic_report(cityscapes_datasets, tmp_path):
    name = cityscapes_datasets["sem_seg"]
    pairs, expected = _semantic_pairs(
        DatasetCatalog.get(name), 19, spoil=lambda labels: np.where(labels == 0, 1, labels)
    )
    results, page, folder, _ = run_report([], name, pairs, tmp_path)
    check_page(results, page, folder, expected)
    assert results["sem_seg"]["IoU"] < 100


def test_report_failure_is_logged_not_raised(synthetic_root, tmp_path, monkeypatch, caplog):
    """A broken report never ends a training run: the metrics come back, the error is logged."""
    name = "d2seg_synthetic_sem_seg_val"
    pairs, _ = _semantic_pairs(DatasetCatalog.get(name)[:2], 6)

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(ConfusionPanel, "to_html", broken)
    cfg = load_config(str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"), CPU)
    evaluator = build_evaluator(cfg, name, str(tmp_path))
    evaluator.reset()
    for input_, output in pairs:
        evaluator.process([input_], [output])
    results = evaluator.evaluate()
    assert "sem_seg" in results and not (tmp_path / "report.html").exists()
    assert "drawing failed" in caplog.text


def test_cityscapes_panoptic_report(cityscapes_datasets, tmp_path):
    """PQ, Cityscapes mIoU and instance AP on one dataset, from the panoptic ground truth."""
    name = cityscapes_datasets["panoptic"]
    thing_ids = set(MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id.values())
    pairs = []
    for record in DatasetCatalog.get(name):  # its segments_info has no isthing
        record = {
            **record,
            "segments_info": [
                {**s, "isthing": s["category_id"] in thing_ids} for s in record["segments_info"]
            ],
        }
        ids, segments = panoptic_from_record(record)
        things = [s for s in segments if s["isthing"]]
        instances = Instances(tuple(ids.shape))
        instances.pred_masks = torch.stack([ids == s["id"] for s in things])
        instances.pred_classes = torch.tensor([s["category_id"] for s in things])
        instances.scores = torch.ones(len(things))
        train_ids = np.asarray(Image.open(record["sem_seg_file_name"]))
        output = {
            "panoptic_seg": (ids, segments),
            "sem_seg": _one_hot(train_ids, 19),
            "instances": instances,
        }
        pairs.append((record, output))
    results, page, folder, _ = run_report([], name, pairs, tmp_path)
    check_page(results, page, folder, [1.0] * len(pairs))
    assert set(results) == {"panoptic_seg", "sem_seg", "segm"}
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("scores", "best", "worst"),
    [
        ([0.5, 0.5, 0.5, 0.5], ["img3", "img2"], ["img0", "img1"]),  # ties split, none twice
        ([0.5, 0.5, 0.5], ["img2", "img1"], ["img0"]),  # odd: the better half is "best"
        ([0.1, 0.9, 0.4, 0.8, 0.2, 0.6], ["img1", "img3"], ["img0", "img4"]),
    ],
)
def test_gallery_heaps(scores, best, worst):
    gallery = Gallery(2)
    kept = []
    for index, score in enumerate(scores):
        drawing = lambda index=index: kept.append(index) or {}  # noqa: E731
        gallery.offer(ScoredImage(index, f"img{index}", score, drawing))
    chosen = split_gallery([gallery], 2)
    assert [[name for _, name, _ in group] for group in chosen] == [best, worst]
    assert len(kept) == len(set(kept))  # each image's outputs kept once, only when needed
    if scores[2:] == [0.4, 0.8, 0.2, 0.6]:
        assert kept == [0, 1, 2, 3, 4]  # 0.6 enters neither heap: its outputs never made
