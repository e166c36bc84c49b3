"""RoI heads Detectron2 lacks: Mask Scoring R-CNN's MaskIoU head (`mask_scoring.py`) and Parsing
R-CNN with its ParsingIoU head (`parsing.py`).

Where training targets live: targets the model computes at training time from its own
proposals (MaskIoU, ParsingIoU, each RoI's part-map crop) sit here, beside the heads that use
them (`mask_iou_targets.py`, `parsing_targets.py`); targets the dataset mapper computes from the
annotations sit in :mod:`d2seg.data.targets`.
"""

from d2seg.modeling.roi_heads.mask_scoring import (  # registration only, and the public API
    ROI_MASKIOU_HEAD_REGISTRY,
    MaskIoUHead,
    MaskScoringConvUpsampleHead,
    build_maskiou_head,
    maskiou_inference,
    maskiou_loss,
)
from d2seg.modeling.roi_heads.parsing import (  # registration only, and the public API
    ROI_PARSING_HEAD_REGISTRY,
    ParsingGCEHead,
    ParsingROIHeads,
    build_parsing_head,
    parsing_inference,
    parsing_loss,
)

__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "MaskIoUHead",
    "MaskScoringConvUpsampleHead",
    "build_maskiou_head",
    "maskiou_inference",
    "maskiou_loss",
    "ROI_PARSING_HEAD_REGISTRY",
    "ParsingGCEHead",
    "ParsingROIHeads",
    "build_parsing_head",
    "parsing_inference",
    "parsing_loss",
]
