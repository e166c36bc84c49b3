"""Evaluators Detectron2 lacks, registered by each test dataset's `evaluator_type`
(:mod:`d2seg.evaluation.build`), and the evaluation report (:mod:`d2seg.evaluation.report`)."""

from d2seg.evaluation.build import (
    EVALUATOR_FACTORIES,
    EvaluatorFactory,
    build_evaluator,
    build_parsing_evaluators,
    register_evaluator,
)
from d2seg.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)
from d2seg.evaluation.coco_backend import FastCOCOEvaluator
from d2seg.evaluation.coco_evaluation import MaskScoringCOCOEvaluator, PanopticThingsCOCOEvaluator
from d2seg.evaluation.panoptic_evaluation import FastCOCOPanopticEvaluator
from d2seg.evaluation.parsing_evaluation import ParsingEvaluator
from d2seg.evaluation.report import ReportEvaluator, ReportSource
from d2seg.evaluation.sem_seg_evaluation import D2SegSemSegEvaluator

__all__ = [
    "D2SegSemSegEvaluator",
    "EVALUATOR_FACTORIES",
    "EvaluatorFactory",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "FastCOCOEvaluator",
    "FastCOCOPanopticEvaluator",
    "MaskScoringCOCOEvaluator",
    "ParsingEvaluator",
    "PanopticThingsCOCOEvaluator",
    "ReportEvaluator",
    "ReportSource",
    "build_evaluator",
    "build_parsing_evaluators",
    "register_evaluator",
]
