"""d2seg's models. Mask R-CNN and FPN use Detectron2's own parts; the heads Detectron2 lacks
register themselves in Detectron2's registries when their module is imported here."""

# registration only
from d2seg.modeling import backbone, meta_arch, roi_heads, sem_seg  # noqa: F401
