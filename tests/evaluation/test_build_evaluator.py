"""Evaluators are picked from each dataset's `evaluator_type`."""

import pytest
from detectron2.data import MetadataCatalog

from d2seg.config import load_config
from d2seg.evaluation import (
    EVALUATOR_FACTORIES,
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    D2SegSemSegEvaluator,
    FastCOCOPanopticEvaluator,
    MaskScoringCOCOEvaluator,
    PanopticThingsCOCOEvaluator,
    build_evaluator,
)
from tests.helpers.configs import CONFIG_ROOT, CPU


@pytest.fixture(scope="module")
def cfg():
    return load_config(str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"), CPU)


def _types(evaluator):
    inner = getattr(evaluator, "_evaluators", [evaluator])
    return [type(e) for e in inner]


def test_types_cover_every_dataset_family():
    assert {
        "coco",
        "coco_panoptic_seg",
        "cityscapes_instance",
        "cityscapes_panoptic_seg",
        "sem_seg",
        "cityscapes_sem_seg",
    } <= set(EVALUATOR_FACTORIES)


def test_synthetic_splits(cfg, synthetic_root, tmp_path):
    assert _types(build_evaluator(cfg, "d2seg_synthetic_instance_val", str(tmp_path))) == [
        MaskScoringCOCOEvaluator
    ]
    assert _types(
        build_evaluator(cfg, "d2seg_synthetic_panoptic_val_separated", str(tmp_path))
    ) == [FastCOCOPanopticEvaluator, PanopticThingsCOCOEvaluator, D2SegSemSegEvaluator]


def test_cityscapes_splits(cfg, tmp_path):
    assert _types(
        build_evaluator(cfg, "d2seg_cityscapes_fine_instance_seg_val", str(tmp_path))
    ) == [CityscapesInstanceEvaluator]
    assert _types(build_evaluator(cfg, "d2seg_cityscapes_fine_sem_seg_val", str(tmp_path))) == [
        CityscapesSemSegEvaluator
    ]


def test_unknown_type_is_named(cfg, tmp_path):
    MetadataCatalog.get("d2seg_test_odd_dataset").set(evaluator_type="odd_type")
    with pytest.raises(
        NotImplementedError,
        match="odd_type.*d2seg_test_odd_dataset|d2seg_test_odd_dataset.*odd_type",
    ):
        build_evaluator(cfg, "d2seg_test_odd_dataset", str(tmp_path))


@pytest.mark.parametrize("write", [False, True])
def test_panoptic_pngs_are_written_only_when_asked(cfg, synthetic_root, tmp_path, write):
    """PQ needs no PNG; the submission files cost ~10 ms per image, so they are opt-in."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.PANOPTIC_WRITE_PREDICTIONS = write
    for evaluator_type, name in (
        ("coco_panoptic_seg", "d2seg_synthetic_panoptic_val_separated"),
        ("cityscapes_panoptic_seg", "d2seg_cityscapes_fine_panoptic_val"),
    ):
        panoptic = EVALUATOR_FACTORIES[evaluator_type](cfg, name, str(tmp_path))[0]
        assert isinstance(panoptic, FastCOCOPanopticEvaluator)
        assert panoptic._output_dir == (str(tmp_path) if write else None)


def test_panoptic_pngs_are_off_by_default(cfg):
    assert cfg.TEST.PANOPTIC_WRITE_PREDICTIONS is False
