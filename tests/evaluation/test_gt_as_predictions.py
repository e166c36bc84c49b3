"""Detectron2's COCO and COCO-panoptic evaluators score ground truth fed back as predictions
100 on the synthetic val split and on the real COCO sample, and less when it is perturbed."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_panoptic
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator

from d2seg.config import load_config
from d2seg.data.panoptic_utils import standard_panoptic_metadata
from d2seg.evaluation import PanopticThingsCOCOEvaluator, build_evaluator
from tests.helpers.configs import CONFIG_ROOT
from tests.helpers.gt_predictions import instances_from_record, panoptic_from_record

QUICKSTART = str(CONFIG_ROOT / "quickstart" / "panoptic_deeplab_R_18_synthetic.yaml")


def _coco_results(dataset_name, records, output_dir, perturb=False):
    evaluator = COCOEvaluator(dataset_name, output_dir=str(output_dir))
    evaluator.reset()
    for record in records:
        instances = instances_from_record(record)
        if perturb and len(instances) > 1:
            instances.pred_classes = (instances.pred_classes + 1) % 3
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()


def _panoptic_results(dataset_name, records, output_dir, drop_first=False):
    evaluator = COCOPanopticEvaluator(dataset_name, str(output_dir))
    evaluator.reset()
    for record in records:
        ids, segments_info = panoptic_from_record(record)
        if drop_first:
            ids = torch.where(ids == segments_info[0]["id"], torch.zeros_like(ids), ids)
            segments_info = segments_info[1:]
        evaluator.process(
            [{"image_id": record["image_id"], "file_name": record["file_name"]}],
            [{"panoptic_seg": (ids, segments_info)}],
        )
    return evaluator.evaluate()


def test_coco_ap_100_on_synthetic_val(synthetic_root, tmp_path):
    records = DatasetCatalog.get("d2seg_synthetic_instance_val")
    results = _coco_results("d2seg_synthetic_instance_val", records, tmp_path)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    perturbed = _coco_results("d2seg_synthetic_instance_val", records, tmp_path, perturb=True)
    assert perturbed["segm"]["AP"] < 60.0


def test_coco_ap_on_a_standard_panoptic_split(synthetic_root, tmp_path):
    """Instance AP on a panoptic split (as Panoptic-DeepLab is evaluated), whose metadata lists
    stuff among `thing_classes`: d2seg's evaluator reports the three thing classes."""
    records = DatasetCatalog.get("d2seg_synthetic_instance_val")
    evaluator = build_evaluator(
        load_config(QUICKSTART), "d2seg_synthetic_panoptic_val", str(tmp_path)
    )
    coco = [e for e in evaluator._evaluators if isinstance(e, PanopticThingsCOCOEvaluator)][0]
    coco.reset()
    for record in records:
        coco.process(
            [{"image_id": record["image_id"]}], [{"instances": instances_from_record(record)}]
        )
    results = coco.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert {k for k in results["segm"] if k.startswith("AP-")} == {
        "AP-circle",
        "AP-triangle",
        "AP-square",
    }


def test_coco_pq_100_on_synthetic_val(synthetic_root, tmp_path):
    records = DatasetCatalog.get("d2seg_synthetic_panoptic_val")
    assert _panoptic_results("d2seg_synthetic_panoptic_val", records, tmp_path)["panoptic_seg"][
        "PQ"
    ] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def coco_sample_datasets(coco_sample, tmp_path_factory):
    """The real sample registered as an instance and a standard panoptic dataset.

    The sample's detection json numbers its annotations from 0, but COCOeval stores matches
    by annotation id and reads id 0 as "unmatched"; real COCO ids start at 1, so the copy used
    here is renumbered from 1 (nothing else changes).
    """
    categories = json.loads((coco_sample / "panoptic_coco_categories.json").read_text())
    detections = json.loads((coco_sample / "panoptic_coco_detection_format.json").read_text())
    for annotation in detections["annotations"]:
        annotation["id"] += 1
    instances_json = str(tmp_path_factory.mktemp("coco_sample") / "instances.json")
    with open(instances_json, "w") as f:
        json.dump(detections, f)
    image_root = str(coco_sample / "input_images")
    names = ("d2seg_test_coco_sample_instances", "d2seg_test_coco_sample_panoptic")
    DatasetCatalog.register(names[0], lambda: load_coco_json(instances_json, image_root, names[0]))
    # the detection json lists all 133 categories; load_coco_json sets the class metadata
    MetadataCatalog.get(names[0]).set(
        json_file=instances_json, image_root=image_root, evaluator_type="coco"
    )
    register_coco_panoptic(
        names[1],
        standard_panoptic_metadata(categories),
        image_root,
        str(coco_sample / "panoptic_examples"),
        str(coco_sample / "panoptic_examples.json"),
        instances_json,
    )
    return names


def test_coco_ap_100_on_real_sample(coco_sample_datasets, tmp_path):
    name = coco_sample_datasets[0]
    records = DatasetCatalog.get(name)
    assert len(records) == 2 and sum(len(r["annotations"]) for r in records) == 50
    results = _coco_results(name, records, tmp_path)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def test_coco_pq_100_on_real_sample(coco_sample_datasets, tmp_path):
    name = coco_sample_datasets[1]
    records = DatasetCatalog.get(name)
    results = _panoptic_results(name, records, tmp_path)["panoptic_seg"]
    assert results["PQ"] == pytest.approx(100.0)
    assert results["PQ_th"] == pytest.approx(100.0) and results["PQ_st"] == pytest.approx(100.0)
    dropped = _panoptic_results(name, records, tmp_path, drop_first=True)["panoptic_seg"]
    assert dropped["PQ"] < 100.0
