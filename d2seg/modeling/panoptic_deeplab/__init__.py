"""Panoptic-DeepLab (Cheng et al., CVPR 2020), all in one place: the meta-architecture, its
semantic and instance branches on Detectron2's DeepLabV3+ decoder, and the post-processing that
groups thing pixels into instances. Each part registers itself when imported here."""

from d2seg.modeling.panoptic_deeplab.instance_head import (  # registration only
    D2SegPanopticDeepLabInsEmbedHead,
)
from d2seg.modeling.panoptic_deeplab.meta_arch import D2SegPanopticDeepLab  # registration only
from d2seg.modeling.panoptic_deeplab.semantic_head import (  # registration only
    D2SegPanopticDeepLabSemSegHead,
)

__all__ = [
    "D2SegPanopticDeepLab",
    "D2SegPanopticDeepLabInsEmbedHead",
    "D2SegPanopticDeepLabSemSegHead",
]
