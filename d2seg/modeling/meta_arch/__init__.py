from d2seg.modeling.meta_arch.mask_scoring_panoptic_fpn import (  # registration only
    MaskScoringPanopticFPN,
)
from d2seg.modeling.meta_arch.semantic_segmentor import (  # registration only
    D2SegSemanticSegmentor,
)

__all__ = ["D2SegSemanticSegmentor", "MaskScoringPanopticFPN"]
