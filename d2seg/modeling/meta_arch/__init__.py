from d2seg.modeling.meta_arch.mask_scoring_panoptic_fpn import (  # registration only
    MaskScoringPanopticFPN,
)

__all__ = ["MaskScoringPanopticFPN"]
