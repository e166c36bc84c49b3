"""Configuration of the DeepLabV3+ decoder that Panoptic-DeepLab's two branches share.

The decoder itself is Detectron2's (`detectron2.projects.deeplab.DeepLabV3PlusHead`: ASPP on the
deepest feature, then 1x1 projections of the shallower ones fused top-down); this module only
turns d2seg's keys into its arguments, deriving what the project keeps in two config nodes.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec

ASPP_POOLING_MODES = ("global", "train_crop")


def aspp_pool_size(cfg: CfgNode) -> tuple[int, int] | None:
    """ASPP image-pooling window in input pixels (None: global average pooling).

    MODEL.PANOPTIC_DEEPLAB.ASPP_POOLING "global" pools the whole input: in training that is the
    crop, at test the whole image, which is what the authors' evaluation does (its pooling
    window is TEST.CROP_SIZE, the full 1025 x 2049 Cityscapes image; bowenc0221/panoptic-deeplab
    tools/test_net_single_core.py). "train_crop" pools a window of INPUT.CROP.SIZE everywhere,
    as Detectron2's project does; test inputs must then be multiples of it.
    """
    mode = cfg.MODEL.PANOPTIC_DEEPLAB.ASPP_POOLING
    if mode not in ASPP_POOLING_MODES:
        raise ValueError(
            f"MODEL.PANOPTIC_DEEPLAB.ASPP_POOLING {mode!r} is not one of {ASPP_POOLING_MODES}"
        )
    if mode == "global":
        return None
    if not cfg.INPUT.CROP.ENABLED or cfg.INPUT.CROP.TYPE != "absolute":
        raise ValueError(
            "MODEL.PANOPTIC_DEEPLAB.ASPP_POOLING 'train_crop' needs INPUT.CROP "
            "ENABLED with TYPE 'absolute' (its SIZE is the pooling window)"
        )
    return tuple(cfg.INPUT.CROP.SIZE)


def deeplab_v3_plus_decoder_args(
    cfg: CfgNode,
    input_shape: dict[str, ShapeSpec],
    *,
    in_features: list[str],
    project_channels: list[int],
    aspp_dilations: list[int],
    aspp_channels: int,
    aspp_dropout: float,
    decoder_channels: int,
    common_stride: int,
    norm: str,
) -> dict:
    """`DeepLabV3PlusHead` keyword arguments for one branch, from that branch's keys.

    The decoder has one stage per input feature: `decoder_channels` for the fused stages and
    `aspp_channels` for the ASPP stage; the DSConv choice comes from MODEL.PANOPTIC_DEEPLAB.
    """
    return {
        "input_shape": {k: v for k, v in input_shape.items() if k in in_features},
        "project_channels": list(project_channels),
        "aspp_dilations": list(aspp_dilations),
        "aspp_dropout": aspp_dropout,
        "decoder_channels": [decoder_channels] * (len(in_features) - 1) + [aspp_channels],
        "common_stride": common_stride,
        "norm": norm,
        "train_size": aspp_pool_size(cfg),
        "use_depthwise_separable_conv": cfg.MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV,
    }
