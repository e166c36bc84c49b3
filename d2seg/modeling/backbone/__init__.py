from d2seg.modeling.backbone.resnet_deeplab import (  # registration only, and the public API
    build_d2seg_resnet_deeplab_backbone,
)

__all__ = ["build_d2seg_resnet_deeplab_backbone"]
