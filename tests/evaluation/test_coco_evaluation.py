"""Mask Scoring R-CNN's evaluation protocol: masks ranked by `mask_scores` where predicted, in
d2seg's COCO evaluator (pycocotools) and Cityscapes evaluator (official cityscapesscripts)."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2seg.data.datasets.cityscapes import load_cityscapes_instances
from d2seg.evaluation import CityscapesInstanceEvaluator, MaskScoringCOCOEvaluator
from tests.helpers.gt_predictions import instances_from_record


def test_coco_evaluation_ranks_boxes_by_scores_and_masks_by_mask_scores(synthetic_root, tmp_path):
    """Ground truth as detections, plus one wrong-class duplicate per image whose box score is
    low but whose mask score is high: box AP stays 100, mask AP drops."""
    records = DatasetCatalog.get("d2seg_synthetic_instance_val")
    evaluator = MaskScoringCOCOEvaluator("d2seg_synthetic_instance_val", output_dir=str(tmp_path))
    evaluator.reset()
    written_mask_scores = []
    for record in records:
        gt = instances_from_record(record)
        wrong = gt[:1]
        wrong.pred_classes = (wrong.pred_classes + 1) % 3
        predicted = type(gt).cat([gt, wrong])
        predicted.scores = torch.cat([torch.ones(len(gt)), torch.full((1,), 0.01)])
        predicted.mask_scores = torch.cat([torch.full((len(gt),), 0.9), torch.full((1,), 0.99)])
        written_mask_scores += predicted.mask_scores.tolist()
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": predicted}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] < 90.0
    bbox = json.loads((tmp_path / "coco_bbox_results.json").read_text())
    segm = json.loads((tmp_path / "coco_segm_results.json").read_text())
    assert sorted({r["score"] for r in bbox}) == pytest.approx([0.01, 1.0])
    assert sorted(r["score"] for r in segm) == pytest.approx(sorted(written_mask_scores))
    assert all("segmentation" in r for r in segm) and all("mask_score" not in r for r in bbox)


@pytest.fixture(scope="module")
def cityscapes_val(cityscapes_root):
    image_dir = str(cityscapes_root / "leftImg8bit" / "val")
    gt_dir = str(cityscapes_root / "gtFine" / "val")
    MetadataCatalog.get("d2seg_test_mask_scoring_cityscapes_val").set(
        image_dir=image_dir,
        gt_dir=gt_dir,
        thing_dataset_id_to_contiguous_id=MetadataCatalog.get(
            "d2seg_cityscapes_fine_instance_seg_val"
        ).thing_dataset_id_to_contiguous_id,
    )
    return load_cityscapes_instances(image_dir, gt_dir)


def _with_false_car(record, score: float, mask_score: float | None):
    """Ground truth (scores 0.9, mask_scores 0.9) plus a car in the sky, where there is none."""
    truth = instances_from_record(record)
    truth.scores = torch.full((len(truth),), 0.9)
    false = truth[:1]
    false.pred_classes = torch.tensor([2])  # contiguous id of "car"
    false.pred_masks = torch.zeros_like(false.pred_masks)
    false.pred_masks[:, 5:30, 100:160] = True  # 1500 pixels, above the 100-pixel minimum
    false.scores = torch.tensor([score])
    predicted = type(truth).cat([truth, false])
    if mask_score is not None:
        predicted.mask_scores = torch.full((len(predicted),), 0.9)
        predicted.mask_scores[-1] = mask_score
    return predicted


def _cityscapes_ap(records, score: float, mask_score: float | None) -> float:
    evaluator = CityscapesInstanceEvaluator("d2seg_test_mask_scoring_cityscapes_val")
    evaluator.reset()
    for record in records:
        outputs = [{"instances": _with_false_car(record, score, mask_score)}]
        evaluator.process([record], outputs)
    return evaluator.evaluate()["segm"]["AP"]


def test_cityscapes_instance_ap_ranks_masks_by_mask_scores(cityscapes_val):
    """The false car ranks first by `scores` (0.95) and last by `mask_scores` (0.1): the
    official evaluation gives AP 100 only when the masks are listed with their mask scores."""
    by_mask_scores = _cityscapes_ap(cityscapes_val, score=0.95, mask_score=0.1)
    without_mask_scores = _cityscapes_ap(cityscapes_val, score=0.95, mask_score=None)
    false_car_last = _cityscapes_ap(cityscapes_val, score=0.1, mask_score=None)
    assert by_mask_scores == pytest.approx(100.0)
    assert false_car_last == pytest.approx(100.0)
    assert without_mask_scores < 95.0
