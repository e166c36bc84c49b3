"""Evaluators, picked by each test dataset's `evaluator_type` metadata.

:func:`build_evaluator` looks the type up in :data:`EVALUATOR_FACTORIES`; a new family adds
itself with :func:`register_evaluator` instead of another branch in `train_net.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

from d2seg.config import register_config
from d2seg.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)
from d2seg.evaluation.coco_backend import FastCOCOEvaluator
from d2seg.evaluation.coco_evaluation import MaskScoringCOCOEvaluator, PanopticThingsCOCOEvaluator
from d2seg.evaluation.panoptic_evaluation import FastCOCOPanopticEvaluator
from d2seg.evaluation.parsing_evaluation import ParsingEvaluator
from d2seg.evaluation.report import ReportEvaluator
from d2seg.evaluation.sem_seg_evaluation import D2SegSemSegEvaluator

EvaluatorFactory = Callable[[CfgNode, str, str], list[DatasetEvaluator]]
EVALUATOR_FACTORIES: dict[str, EvaluatorFactory] = {}


@register_config(
    "TEST.EVAL_BACKEND", "TEST.PANOPTIC_WRITE_PREDICTIONS", "TEST.PARSING", "TEST.REPORT"
)
def add_evaluation_config(cfg: CfgNode) -> None:
    """The keys the factories below read: COCO and PQ engines, human-parsing evaluation (the
    reference's defaults, soeaver/Parsing-R-CNN rcnn/core/config.py PRCNN.*, for CIHP; MHP-v2
    configs set SEMSEG_SCORE_THRESH 0.05, as the reference's comment says) and the report."""
    # COCO box / mask AP: "auto" (hotcoco where installed, else Detectron2's COCO API), "hotcoco"
    # (error if missing) or "pycocotools" (Detectron2's path, its COCOeval_opt where built)
    cfg.TEST.EVAL_BACKEND = "auto"
    # PQ is computed from the maps in memory; True also writes predictions.json + predictions/
    # *.png (a COCO / Cityscapes panoptic submission) beside the results, ~10 ms per image
    cfg.TEST.PANOPTIC_WRITE_PREDICTIONS = False
    cfg.TEST.PARSING = CfgNode()
    # Detections painted into each image's global part map for mIoU score >= this.
    cfg.TEST.PARSING.SEMSEG_SCORE_THRESH = 0.3  # reference PRCNN.SEMSEG_SCORE_THRESH (CIHP)
    cfg.TEST.PARSING.AP_SCORE_THRESH = 0.001  # detections ranked for AP^p / PCP score >= this
    # Images without any detection count in mIoU as all background; False drops them, as the
    # reference does (it writes no prediction PNG for them). CIHP / MHP-v2 configs: False.
    cfg.TEST.PARSING.COUNT_EMPTY_IMAGES = True
    # AP^p matching: "unclaimed" (best person not yet claimed) or "reference" (best person even
    # if claimed -> false positive; the authors' parsing_eval.py). CIHP / MHP-v2: "reference".
    cfg.TEST.PARSING.MATCHING = "unclaimed"
    cfg.TEST.REPORT = CfgNode()
    cfg.TEST.REPORT.ENABLED = True  # write OUTPUT_DIR/inference/<dataset>/report.html
    cfg.TEST.REPORT.GALLERY = True  # best / worst images by per-image score (off: not scored)
    cfg.TEST.REPORT.GALLERY_SIZE = 8  # at most this many best and this many worst images
    # config whose model-zoo reference numbers the report shows; load_config fills it in
    cfg.TEST.REPORT.CONFIG_FILE = ""


def register_evaluator(evaluator_type: str) -> Callable[[EvaluatorFactory], EvaluatorFactory]:
    """Decorator: `factory(cfg, dataset_name, output_folder)` serves datasets of this type."""

    def add(factory: EvaluatorFactory) -> EvaluatorFactory:
        EVALUATOR_FACTORIES[evaluator_type] = factory
        return factory

    return add


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: str) -> DatasetEvaluator:
    """The evaluator(s) for `dataset_name`, chosen by its metadata's `evaluator_type`."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in EVALUATOR_FACTORIES:
        raise NotImplementedError(
            f"dataset {dataset_name!r} has evaluator_type {evaluator_type!r}; known types: "
            f"{sorted(EVALUATOR_FACTORIES)}"
        )
    evaluators = EVALUATOR_FACTORIES[evaluator_type](cfg, dataset_name, output_folder)
    report = cfg.TEST.REPORT
    if report.ENABLED and output_folder:  # report.html beside the results (report/)
        return ReportEvaluator(
            evaluators,
            dataset_name,
            output_folder,
            gallery_size=report.GALLERY_SIZE if report.GALLERY else 0,
            config_file=report.CONFIG_FILE,
            metrics_path=os.path.join(cfg.OUTPUT_DIR, "metrics.json"),
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


@register_evaluator("coco")
def _coco(cfg: CfgNode, dataset_name: str, output_folder: str) -> list[DatasetEvaluator]:
    return [
        MaskScoringCOCOEvaluator(
            dataset_name, output_dir=output_folder, eval_backend=cfg.TEST.EVAL_BACKEND
        )
    ]


@register_evaluator("sem_seg")
def _sem_seg(cfg: CfgNode, dataset_name: str, output_folder: str) -> list[DatasetEvaluator]:
    return [D2SegSemSegEvaluator(dataset_name, output_dir=output_folder)]


def _panoptic_quality(cfg: CfgNode, dataset_name: str, output_folder: str):
    """PQ from the maps in memory; the submission PNGs + json only when
    TEST.PANOPTIC_WRITE_PREDICTIONS asks for them."""
    write = cfg.TEST.PANOPTIC_WRITE_PREDICTIONS
    return FastCOCOPanopticEvaluator(dataset_name, output_folder if write else None)


@register_evaluator("coco_panoptic_seg")
def _coco_panoptic(cfg: CfgNode, dataset_name: str, output_folder: str) -> list[DatasetEvaluator]:
    """PQ, plus box/mask AP where instance annotations exist and mIoU where stuff PNGs exist
    (the "separated" registrations Panoptic FPN uses)."""
    metadata = MetadataCatalog.get(dataset_name)
    evaluators: list[DatasetEvaluator] = [_panoptic_quality(cfg, dataset_name, output_folder)]
    if metadata.get("json_file"):
        evaluators.append(
            PanopticThingsCOCOEvaluator(
                dataset_name, output_dir=output_folder, eval_backend=cfg.TEST.EVAL_BACKEND
            )
        )
    if metadata.get("sem_seg_root"):
        evaluators.append(D2SegSemSegEvaluator(dataset_name, output_dir=output_folder))
    return evaluators


@register_evaluator("cityscapes_instance")
def _cityscapes_instance(cfg: CfgNode, dataset_name: str, output_folder: str):
    return [CityscapesInstanceEvaluator(dataset_name)]


@register_evaluator("cityscapes_sem_seg")
def _cityscapes_sem_seg(cfg: CfgNode, dataset_name: str, output_folder: str):
    return [CityscapesSemSegEvaluator(dataset_name)]


@register_evaluator("cityscapes_panoptic_seg")
def _cityscapes_panoptic(cfg: CfgNode, dataset_name: str, output_folder: str):
    """PQ, Cityscapes mIoU and instance AP. The instance evaluator skips outputs without
    `instances` (MODEL.PANOPTIC_DEEPLAB.PREDICT_INSTANCES off), so no model key is read here."""
    return [
        _panoptic_quality(cfg, dataset_name, output_folder),
        CityscapesSemSegEvaluator(dataset_name),
        CityscapesInstanceEvaluator(dataset_name),
    ]


@register_evaluator("parsing")
def build_parsing_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str | None
) -> list[DatasetEvaluator]:
    """Parsing metrics (mIoU, AP^p, PCP; keys under ``cfg.TEST.PARSING``) plus person-box AP
    with d2seg's COCO evaluator (TEST.EVAL_BACKEND) on the prepared json."""
    settings = cfg.TEST.PARSING
    return [
        ParsingEvaluator(
            dataset_name,
            semseg_score_thresh=settings.SEMSEG_SCORE_THRESH,
            ap_score_thresh=settings.AP_SCORE_THRESH,
            count_empty_images=settings.COUNT_EMPTY_IMAGES,
            matching=settings.MATCHING,
            output_dir=output_folder,
        ),
        FastCOCOEvaluator(
            dataset_name,
            tasks=("bbox",),
            output_dir=output_folder,
            eval_backend=cfg.TEST.EVAL_BACKEND,
        ),
    ]
