"""Cityscapes evaluators (official cityscapesscripts code) on a fabricated miniature tree."""

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from PIL import Image

from d2seg.data.datasets.cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from d2seg.evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from tests.helpers.gt_predictions import instances_from_record
from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def val_split(cityscapes_root):
    load_script("datasets/prepare_cityscapes.py").create_train_id_label_images(
        str(cityscapes_root), ["val"]
    )
    image_dir = str(cityscapes_root / "leftImg8bit" / "val")
    gt_dir = str(cityscapes_root / "gtFine" / "val")
    MetadataCatalog.get("d2seg_test_cityscapes_val").set(
        image_dir=image_dir,
        gt_dir=gt_dir,
        thing_dataset_id_to_contiguous_id=MetadataCatalog.get(
            "d2seg_cityscapes_fine_instance_seg_val"
        ).thing_dataset_id_to_contiguous_id,
    )
    return image_dir, gt_dir


def _instance_ap(records, relabel=None):
    evaluator = CityscapesInstanceEvaluator("d2seg_test_cityscapes_val")
    evaluator.reset()
    for record in records:
        instances = instances_from_record(record)
        if relabel is not None:
            instances.pred_classes = relabel(instances.pred_classes)
        evaluator.process([record], [{"instances": instances}])
    return evaluator.evaluate()["segm"]


def test_instance_ap_100_for_ground_truth(val_split):
    records = load_cityscapes_instances(*val_split)
    result = _instance_ap(records)
    assert result["AP"] == pytest.approx(100.0) and result["AP50"] == pytest.approx(100.0)
    # calling every car a truck: car AP 0, person AP 100, truck has no ground truth -> mean 50
    car, truck = 2, 3  # contiguous ids of CITYSCAPES_THING_LABELS
    wrong = _instance_ap(records, lambda c: torch.where(c == car, torch.full_like(c, truck), c))
    assert wrong["AP"] == pytest.approx(50.0)


def _semantic_iou(records, corrupt=False):
    evaluator = CityscapesSemSegEvaluator("d2seg_test_cityscapes_val")
    evaluator.reset()
    for record in records:
        train_ids = np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64)
        if corrupt:
            train_ids = np.where(train_ids == 0, 1, train_ids)  # road predicted as sidewalk
        logits = torch.nn.functional.one_hot(torch.from_numpy(train_ids).clamp(max=18), 19)
        evaluator.process([record], [{"sem_seg": logits.permute(2, 0, 1).float()}])
    return evaluator.evaluate()["sem_seg"]


def test_semantic_miou_100_for_ground_truth(val_split):
    records = load_cityscapes_semantic(*val_split)
    assert _semantic_iou(records)["IoU"] == pytest.approx(100.0)
    assert _semantic_iou(records, corrupt=True)["IoU"] < 90.0


def test_instance_evaluator_skips_outputs_without_instances(cityscapes_root):
    """A panoptic model with PREDICT_INSTANCES off gives no `instances`: nothing to evaluate,
    no error (the evaluator factory reads no model key to decide this)."""
    from detectron2.data import MetadataCatalog

    from d2seg.evaluation import CityscapesInstanceEvaluator

    name = "d2seg_test_cityscapes_no_instances"
    MetadataCatalog.get(name).set(
        gt_dir=str(cityscapes_root / "gtFine" / "val"), thing_dataset_id_to_contiguous_id={26: 0}
    )
    evaluator = CityscapesInstanceEvaluator(name)
    evaluator.reset()
    record = {
        "file_name": str(
            cityscapes_root
            / "leftImg8bit"
            / "val"
            / "frankfurt"
            / "frankfurt_000000_000294_leftImg8bit.png"
        )
    }
    evaluator.process([record], [{"sem_seg": None}])
    assert evaluator.evaluate() == {}
