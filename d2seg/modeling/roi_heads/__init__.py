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
