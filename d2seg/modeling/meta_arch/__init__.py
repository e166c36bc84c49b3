from d2seg.modeling.meta_arch.mask_scoring_panoptic_fpn import (  # registration only
    MaskScoringPanopticFPN,
)
from d2seg.modeling.meta_arch.panoptic_deeplab import (  # registration only
    INS_EMBED_BRANCHES_REGISTRY,
    PanopticDeepLab,
    PanopticDeepLabInsEmbedHead,
    PanopticDeepLabSemSegHead,
)

__all__ = [
    "INS_EMBED_BRANCHES_REGISTRY",
    "MaskScoringPanopticFPN",
    "PanopticDeepLab",
    "PanopticDeepLabInsEmbedHead",
    "PanopticDeepLabSemSegHead",
]
