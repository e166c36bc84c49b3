"""d2seg's models. Mask R-CNN and FPN use Detectron2's own parts; the heads Detectron2 lacks
register themselves in Detectron2's registries when their module is imported here."""

# registration only
from d2seg.modeling import backbone, meta_arch, panoptic_deeplab, roi_heads, sem_seg  # noqa: F401
from d2seg.modeling.meta_arch import D2SegSemanticSegmentor, MaskScoringPanopticFPN
from d2seg.modeling.panoptic_deeplab import D2SegPanopticDeepLab

__all__ = ["D2SegPanopticDeepLab", "D2SegSemanticSegmentor", "MaskScoringPanopticFPN"]
