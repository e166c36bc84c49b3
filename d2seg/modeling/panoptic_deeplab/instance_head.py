"""Panoptic-DeepLab's instance branch (Cheng et al., CVPR 2020, sec. 3.1 and 3.4): a DeepLabV3+
decoder with a centre-heatmap head (1 channel) and an offset head (2 channels, (dy, dx)).

Detectron2's project head supplies the decoder, the offset head and the losses (centre MSE and
offset L1, each a weighted sum over its weight mass; x200 and x0.01 by config). It differs from
the authors in one place: with the DSConv decoders its centre head stays two 3x3 convs, while
the authors' reference (bowenc0221/panoptic-deeplab, `SinglePanopticDeepLabHead`) gives every
prediction head one 5x5 depthwise-separable conv. d2seg follows the authors by default
(MODEL.PANOPTIC_DEEPLAB.HEAD_LAYOUT "authors") and builds the project's layout on request
("detectron2"), so the project's model-zoo checkpoints load. With 3x3 decoders the two layouts are
the same: two 3x3 convs decoder -> decoder -> HEAD_CHANNELS, the 3x3 counterpart of the 5x5 DSConv.
"""

from __future__ import annotations

import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import DepthwiseSeparableConv2d, ShapeSpec
from detectron2.projects.panoptic_deeplab import (
    INS_EMBED_BRANCHES_REGISTRY,
    PanopticDeepLabInsEmbedHead,
)

from d2seg.config import register_config
from d2seg.modeling.panoptic_deeplab.decoder import deeplab_v3_plus_decoder_args

HEAD_LAYOUTS = ("authors", "detectron2")


def unless_panoptic_deeplab(cfg: CfgNode) -> str | None:
    """None when the model is Panoptic-DeepLab, else why it does not read its keys."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "D2SegPanopticDeepLab":
        return None
    return f"MODEL.META_ARCHITECTURE is {arch!r}, not 'D2SegPanopticDeepLab'"


@register_config("MODEL.INS_EMBED_HEAD", unread_reason=unless_panoptic_deeplab)
def add_instance_head_config(cfg: CfgNode) -> None:
    """The instance (centre / offset) branch: the paper's setting (sec. 3.1, 3.4), key names
    of Detectron2's project, so its configs' values carry over."""
    ins = cfg.MODEL.INS_EMBED_HEAD = CfgNode()
    ins.NAME = "D2SegPanopticDeepLabInsEmbedHead"  # entry of INS_EMBED_BRANCHES_REGISTRY
    ins.IN_FEATURES = ["res2", "res3", "res5"]  # fused low-level features + ASPP input
    ins.PROJECT_CHANNELS = [16, 32]  # projections of res2, res3 (paper: half the semantic)
    ins.ASPP_CHANNELS = 256  # ASPP width
    ins.ASPP_DILATIONS = [6, 12, 18]  # ASPP atrous rates at output stride 16
    ins.ASPP_DROPOUT = 0.1  # dropout after the ASPP
    ins.HEAD_CHANNELS = 32  # channels of the center / offset prediction convs
    ins.CONVS_DIM = 128  # decoder width (paper: 128 for the instance branch)
    ins.COMMON_STRIDE = 4  # predictions at stride 4, upsampled x4
    ins.NORM = "SyncBN"  # norm of the decoder and heads (paper: synchronized BN)
    ins.CENTER_LOSS_WEIGHT = 200.0  # paper sec. 3.4
    ins.OFFSET_LOSS_WEIGHT = 0.01  # paper sec. 3.4


@INS_EMBED_BRANCHES_REGISTRY.register()
class D2SegPanopticDeepLabInsEmbedHead(PanopticDeepLabInsEmbedHead):
    """The project's instance head with the authors' centre head when `separable_center_head`.

    In training `forward(features, center, center_weights, offset, offset_weights)` returns
    `(None, None, {"loss_center"}, {"loss_offset"})`; at inference `forward(features)` returns
    `(centre heatmap, offsets in input pixels, {}, {})`, both at input resolution.
    """

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, separable_center_head: bool, **kwargs):
        """
        Args:
            separable_center_head: one 5x5 depthwise-separable conv before the centre
                predictor (the authors' layout) instead of the project's two 3x3 convs.
            kwargs: the project head's arguments.
        """
        super().__init__(input_shape, **kwargs)
        if separable_center_head:
            self.center_head = DepthwiseSeparableConv2d(
                kwargs["decoder_channels"][0],
                kwargs["head_channels"],
                kernel_size=5,
                padding=2,
                norm1=kwargs["norm"],
                activation1=F.relu,
                norm2=kwargs["norm"],
                activation2=F.relu,
            )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.INS_EMBED_HEAD
        pdl = cfg.MODEL.PANOPTIC_DEEPLAB
        if pdl.HEAD_LAYOUT not in HEAD_LAYOUTS:
            raise ValueError(
                f"MODEL.PANOPTIC_DEEPLAB.HEAD_LAYOUT {pdl.HEAD_LAYOUT!r} is not one "
                f"of {HEAD_LAYOUTS}"
            )
        return {
            **deeplab_v3_plus_decoder_args(cfg, input_shape, head),
            "head_channels": head.HEAD_CHANNELS,
            "center_loss_weight": head.CENTER_LOSS_WEIGHT,
            "offset_loss_weight": head.OFFSET_LOSS_WEIGHT,
            "separable_center_head": (
                pdl.USE_DEPTHWISE_SEPARABLE_CONV and pdl.HEAD_LAYOUT == "authors"
            ),
        }
