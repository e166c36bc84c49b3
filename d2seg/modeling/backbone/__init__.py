from d2seg.modeling.backbone.resnet_deeplab import (  # registration only, and the public API
    build_d2seg_resnet_deeplab_backbone,
)
from d2seg.modeling.backbone.timm_backbone import (  # registration only, and the public API
    TimmBackbone,
    build_timm_backbone,
)

__all__ = ["TimmBackbone", "build_d2seg_resnet_deeplab_backbone", "build_timm_backbone"]
