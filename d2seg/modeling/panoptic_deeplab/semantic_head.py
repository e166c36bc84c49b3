"""Panoptic-DeepLab's semantic branch (Cheng et al., CVPR 2020, sec. 3.1 and 3.4).

Detectron2's project head is right (DeepLabV3+ decoder; a 5x5 DSConv head, or two 3x3 convs
decoder -> decoder -> HEAD_CHANNELS; 1x1 predictor; `DeepLabCE` hard-pixel mining on the weighted
per-pixel cross-entropy), so d2seg uses it and only configures it from d2seg's keys.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.projects.panoptic_deeplab import PanopticDeepLabSemSegHead

from d2seg.modeling.panoptic_deeplab.decoder import deeplab_v3_plus_decoder_args
from d2seg.modeling.sem_seg.decode_head import sem_seg_head_config

SEMANTIC_LOSS_TYPES = ("hard_pixel_mining", "cross_entropy")


@sem_seg_head_config("PANOPTIC_DEEPLAB")
def add_panoptic_deeplab_semantic_config(node: CfgNode) -> None:
    """The semantic branch's decoder and loss: the paper's Cityscapes setting, as in the
    authors' reference (bowenc0221/panoptic-deeplab) and Detectron2's project."""
    node.PROJECT_CHANNELS = [32, 64]  # 1x1 projections of IN_FEATURES but the last (res2, res3)
    node.ASPP_CHANNELS = 256  # ASPP width (its rates: MODEL.SEM_SEG_HEAD.ASPP.DILATIONS)
    node.ASPP_DROPOUT = 0.1  # dropout after the ASPP
    node.HEAD_CHANNELS = 256  # channels of the prediction head conv
    node.LOSS_TYPE = "hard_pixel_mining"  # "cross_entropy" or "hard_pixel_mining"
    node.LOSS_TOP_K = 0.2  # fraction of hardest pixels kept (0.2 Cityscapes, 1.0 COCO)


@SEM_SEG_HEADS_REGISTRY.register()
class D2SegPanopticDeepLabSemSegHead(PanopticDeepLabSemSegHead):
    """The project's semantic head, built from d2seg's keys: DSConv and ASPP pooling from
    MODEL.PANOPTIC_DEEPLAB (one node, no second flag to keep equal), loss from SEM_SEG_HEAD.

    In training `forward(features, targets, weights)` returns `(None, {"loss_sem_seg"})`; at
    inference `forward(features)` returns `(logits at input resolution, {})`.
    """

    config_nodes = ("ASPP", "PANOPTIC_DEEPLAB")

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        branch = head.PANOPTIC_DEEPLAB
        if branch.LOSS_TYPE not in SEMANTIC_LOSS_TYPES:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.PANOPTIC_DEEPLAB.LOSS_TYPE {branch.LOSS_TYPE!r} is not one "
                f"of {SEMANTIC_LOSS_TYPES}"
            )
        # "cross_entropy" is the plain mean over every pixel, i.e. top-k 1.0 (the authors'
        # DeepLabCE); the project's own "cross_entropy" branch cannot take the per-pixel
        # weights that its forward passes.
        top_k = branch.LOSS_TOP_K if branch.LOSS_TYPE == "hard_pixel_mining" else 1.0
        return {
            **deeplab_v3_plus_decoder_args(cfg, input_shape, head, branch, head.ASPP.DILATIONS),
            "head_channels": branch.HEAD_CHANNELS,
            "loss_weight": head.LOSS_WEIGHT,
            "loss_type": "hard_pixel_mining",
            "loss_top_k": top_k,
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
        }
