"""DeepLabV3 (Chen et al., 2017) and DeepLabV3+ (Chen et al., ECCV 2018) heads, as
MMSegmentation's `ASPPHead` and `DepthwiseSeparableASPPHead` (`deeplabv3_r50-d8`,
`deeplabv3plus_r50-d8`: 512 channels, rates 12 / 24 / 36 at output stride 8).

The ASPP is Detectron2's `detectron2.layers.ASPP` (1x1 branch, three atrous branches, image
pooling), as Panoptic-DeepLab uses it, with its 1x1 projection replaced by the 3x3 bottleneck
conv of DeepLabV3 sec. 3.3 / MMSegmentation; its image-pooling conv keeps Detectron2's bias
instead of MMSegmentation's BN (C more parameters: 512 vs 1024).

DeepLabV3+ does not reuse `detectron2.projects.deeplab.DeepLabV3PlusHead`: that head projects
the ASPP with a 1x1 conv and fuses with one 5x5 depthwise-separable conv (or two plain 3x3),
where the paper (sec. 4.1) and MMSegmentation use a 3x3 bottleneck, a 48-channel low-level
projection and two 3x3 depthwise-separable convs; it also computes its loss at stride 4."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ASPP, DepthwiseSeparableConv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.sem_seg.decode_head import (
    DecodeHead,
    conv_norm_relu,
    resize,
    sem_seg_head_config,
)


def build_aspp(
    in_channels: int, channels: int, dilations: list[int], norm: str, separable: bool
) -> ASPP:
    """Detectron2's ASPP with global image pooling, no dropout (the head's classifier has it)
    and a 3x3 conv-norm-ReLU bottleneck over its 5 branches."""
    aspp = ASPP(
        in_channels,
        channels,
        dilations,
        norm=norm,
        activation=nn.ReLU(),
        dropout=0.0,
        use_depthwise_separable_conv=separable,
    )
    aspp.project = conv_norm_relu(5 * channels, channels, 3, norm)
    return aspp


@sem_seg_head_config("ASPP")
def add_aspp_config(node: CfgNode) -> None:
    """The atrous rates of every ASPP: DeepLabV3, DeepLabV3+ and Panoptic-DeepLab's semantic
    branch."""
    node.DILATIONS = [6, 12, 18]  # at output stride 16 (DeepLabV3 sec. 3.3); OS 8: 12, 24, 36


@sem_seg_head_config("DEEPLABV3PLUS")
def add_deeplabv3plus_config(node: CfgNode) -> None:
    """DeepLabV3+'s low-level skip."""
    node.C1_IN_FEATURE = "res2"  # low-level feature fused by the decoder (paper sec. 3.1)
    node.C1_CHANNELS = 48  # its 1x1 projection width (paper sec. 4.1)


@SEM_SEG_HEADS_REGISTRY.register()
class ASPPHead(DecodeHead):
    """DeepLabV3. Args (beyond :class:`DecodeHead`'s): dilations (ASPP.DILATIONS)."""

    config_nodes = ("ASPP",)

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, dilations: list[int], **kwargs):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.aspp = build_aspp(in_channels, self.channels, dilations, self.norm, False)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape) | {
            "dilations": list(cfg.MODEL.SEM_SEG_HEAD.ASPP.DILATIONS)
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        return self.aspp(features[self.in_features[0]])


@SEM_SEG_HEADS_REGISTRY.register()
class DepthwiseSeparableASPPHead(DecodeHead):
    """DeepLabV3+: separable ASPP on IN_FEATURES[0], upsampled to the low-level feature
    (DEEPLABV3PLUS.C1_IN_FEATURE, projected to C1_CHANNELS), concatenated, two 3x3 separable
    convs.

    Args (beyond :class:`DecodeHead`'s): dilations (ASPP.DILATIONS), c1_feature,
    c1_shape (its ShapeSpec), c1_channels.
    """

    config_nodes = ("ASPP", "DEEPLABV3PLUS")

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        dilations: list[int],
        c1_feature: str,
        c1_shape: ShapeSpec,
        c1_channels: int = 48,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.aspp = build_aspp(in_channels, self.channels, dilations, self.norm, True)
        self.c1_feature = c1_feature
        self.output_feature, self.output_stride = c1_feature, c1_shape.stride
        self.c1_bottleneck = conv_norm_relu(c1_shape.channels, c1_channels, 1, self.norm)
        self.sep_bottleneck = nn.Sequential(
            *[
                DepthwiseSeparableConv2d(
                    c_in,
                    self.channels,
                    kernel_size=3,
                    padding=1,
                    norm1=self.norm,
                    activation1=nn.ReLU(),
                    norm2=self.norm,
                    activation2=nn.ReLU(),
                )
                for c_in in (self.channels + c1_channels, self.channels)
            ]
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        skip = cfg.MODEL.SEM_SEG_HEAD.DEEPLABV3PLUS
        if skip.C1_IN_FEATURE not in input_shape:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.DEEPLABV3PLUS.C1_IN_FEATURE {skip.C1_IN_FEATURE!r} is not a "
                f"backbone output ({sorted(input_shape)})"
            )
        return cls.base_config(cfg, input_shape) | {
            "dilations": list(cfg.MODEL.SEM_SEG_HEAD.ASPP.DILATIONS),
            "c1_feature": skip.C1_IN_FEATURE,
            "c1_shape": input_shape[skip.C1_IN_FEATURE],
            "c1_channels": skip.C1_CHANNELS,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        c1 = self.c1_bottleneck(features[self.c1_feature])
        x = resize(self.aspp(features[self.in_features[0]]), c1.shape[-2:], self.align_corners)
        return self.sep_bottleneck(torch.cat([x, c1], dim=1))
