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
    head: CfgNode,
    branch: CfgNode | None = None,
    aspp_dilations: list[int] | None = None,
) -> dict:
    """`DeepLabV3PlusHead` keyword arguments for one branch.

    `head` gives the features, decoder width, stride and norm; `branch` (default: `head`) the
    projections and the ASPP width and dropout; `aspp_dilations` (default: the branch's
    ASPP_DILATIONS) its rates. The instance head keeps all of them in one node; the semantic
    head splits them between SEM_SEG_HEAD, its PANOPTIC_DEEPLAB node and the shared ASPP node.
    The decoder has one stage per input feature: CONVS_DIM channels for the fused stages and
    ASPP_CHANNELS for the ASPP stage; the DSConv choice comes from MODEL.PANOPTIC_DEEPLAB.
    """
    branch = head if branch is None else branch
    dilations = branch.ASPP_DILATIONS if aspp_dilations is None else aspp_dilations
    return {
        "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
        "project_channels": list(branch.PROJECT_CHANNELS),
        "aspp_dilations": list(dilations),
        "aspp_dropout": branch.ASPP_DROPOUT,
        "decoder_channels": [head.CONVS_DIM] * (len(head.IN_FEATURES) - 1) + [branch.ASPP_CHANNELS],
        "common_stride": head.COMMON_STRIDE,
        "norm": head.NORM,
        "train_size": aspp_pool_size(cfg),
        "use_depthwise_separable_conv": cfg.MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV,
    }
