"""Dense heads: Panoptic-DeepLab's semantic and instance branches on Detectron2's DeepLabV3+
decoder. Each registers itself in Detectron2's registries when imported here."""

from d2seg.modeling.sem_seg.panoptic_deeplab_instance_head import (  # registration only
    D2SegPanopticDeepLabInsEmbedHead,
)
from d2seg.modeling.sem_seg.panoptic_deeplab_semantic_head import (  # registration only
    D2SegPanopticDeepLabSemSegHead,
)

__all__ = ["D2SegPanopticDeepLabInsEmbedHead", "D2SegPanopticDeepLabSemSegHead"]
