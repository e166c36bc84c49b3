from d2seg.modeling.backbone.resnet_deeplab import (  # registration only, and the public API
    DeepLabStem,
    build_resnet_deeplab_backbone,
)

__all__ = ["DeepLabStem", "build_resnet_deeplab_backbone"]
