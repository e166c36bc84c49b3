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

from d2seg.modeling.sem_seg.deeplab_decoder import deeplab_v3_plus_decoder_args

HEAD_LAYOUTS = ("authors", "detectron2")


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
            **deeplab_v3_plus_decoder_args(cfg, head, input_shape),
            "head_channels": head.HEAD_CHANNELS,
            "center_loss_weight": head.CENTER_LOSS_WEIGHT,
            "offset_loss_weight": head.OFFSET_LOSS_WEIGHT,
            "separable_center_head": (
                pdl.USE_DEPTHWISE_SEPARABLE_CONV and pdl.HEAD_LAYOUT == "authors"
            ),
        }
