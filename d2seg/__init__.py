"""d2seg: a Detectron2 plugin for instance, panoptic, semantic and human-part segmentation.

Importing d2seg registers its datasets, models, mappers and evaluators with Detectron2; the names
below are the public API (config, extension points, and the heads a user builds on).
"""

from d2seg import data, engine, evaluation, modeling, solver  # noqa: F401  (registration only)
from d2seg.config import add_d2seg_config, load_config
from d2seg.data.mappers import build_test_mapper, build_train_mapper, register_mapper
from d2seg.evaluation import build_evaluator, register_evaluator
from d2seg.modeling.meta_arch import MaskScoringPanopticFPN
from d2seg.modeling.panoptic_deeplab import D2SegPanopticDeepLab
from d2seg.modeling.roi_heads import (
    ROI_MASKIOU_HEAD_REGISTRY,
    ROI_PARSING_HEAD_REGISTRY,
    MaskScoringConvUpsampleHead,
    ParsingROIHeads,
)

__version__ = "0.1.0"
__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "ROI_PARSING_HEAD_REGISTRY",
    "D2SegPanopticDeepLab",
    "MaskScoringConvUpsampleHead",
    "MaskScoringPanopticFPN",
    "ParsingROIHeads",
    "add_d2seg_config",
    "build_evaluator",
    "build_test_mapper",
    "build_train_mapper",
    "load_config",
    "register_evaluator",
    "register_mapper",
]
