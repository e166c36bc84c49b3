from d2seg.modeling.meta_arch.mask_scoring_panoptic_fpn import (  # registration only
    MaskScoringPanopticFPN,
)
from d2seg.modeling.meta_arch.panoptic_deeplab import (  # registration only
    D2SegPanopticDeepLab,
)

__all__ = ["D2SegPanopticDeepLab", "MaskScoringPanopticFPN"]
