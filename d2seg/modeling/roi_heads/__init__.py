from d2seg.modeling.roi_heads.mask_scoring import (  # registration only, and the public API
    ROI_MASKIOU_HEAD_REGISTRY,
    MaskIoUHead,
    MaskScoringROIHeads,
    build_maskiou_head,
    maskiou_inference,
    maskiou_loss,
)

__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "MaskIoUHead",
    "MaskScoringROIHeads",
    "build_maskiou_head",
    "maskiou_inference",
    "maskiou_loss",
]
