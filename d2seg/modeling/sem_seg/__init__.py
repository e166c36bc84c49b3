"""Semantic decode heads, one file each on `decode_head.DecodeHead`. Each registers itself in
Detectron2's SEM_SEG_HEADS_REGISTRY, and declares its config node, when imported here."""

from d2seg.modeling.sem_seg.ann_head import ANNHead  # registration only
from d2seg.modeling.sem_seg.aspp_head import (  # registration only
    ASPPHead,
    DepthwiseSeparableASPPHead,
)
from d2seg.modeling.sem_seg.aspp_v2_head import ASPPV2Head  # registration only
from d2seg.modeling.sem_seg.cc_head import CCHead  # registration only
from d2seg.modeling.sem_seg.da_head import DAHead  # registration only
from d2seg.modeling.sem_seg.dense_aspp_head import DenseASPPHead  # registration only
from d2seg.modeling.sem_seg.fcn_head import FCNHead  # registration only
from d2seg.modeling.sem_seg.isa_head import ISAHead  # registration only
from d2seg.modeling.sem_seg.lraspp_head import LRASPPHead  # registration only
from d2seg.modeling.sem_seg.ocr_head import OCRHead  # registration only
from d2seg.modeling.sem_seg.psa_head import PSAHead  # registration only
from d2seg.modeling.sem_seg.psp_head import PSPHead  # registration only
from d2seg.modeling.sem_seg.uper_head import UPerHead  # registration only

__all__ = [
    "ANNHead",
    "ASPPHead",
    "ASPPV2Head",
    "CCHead",
    "DAHead",
    "DenseASPPHead",
    "DepthwiseSeparableASPPHead",
    "FCNHead",
    "ISAHead",
    "LRASPPHead",
    "OCRHead",
    "PSAHead",
    "PSPHead",
    "UPerHead",
]
