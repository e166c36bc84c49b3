"""Lite R-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019, sec. 6.4), as
MMSegmentation's `LRASPPHead` in `lraspp_m-v3-d8`: on the deepest feature (960 channels at
output stride 8) a 1x1 conv-BN-ReLU to 128 channels gated by a sigmoid of a 1x1 conv over a
49 x 49 average pool with stride (16, 20) (the paper's "large pooling kernel with a large
stride"), then a 1x1 conv with bias; then for each lower feature, deepest first (MMSegmentation's
extension of the paper's single skip): upsample, concatenate its bias-free 1x1 projection (32 /
64 channels), fuse with a 1x1 conv-BN-ReLU back to 128. IN_FEATURES lists the features finest
first, the deepest last (MobileNetV3: 16 ch at stride 2, 24 at 4, 960 at 8); logits come out at
the finest one's stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.sem_seg.decode_head import (
    DecodeHead,
    conv_norm_relu,
    resize,
    sem_seg_head_config,
)


@sem_seg_head_config("LRASPP")
def add_lraspp_config(node: CfgNode) -> None:
    """LR-ASPP (MMSegmentation `LRASPPHead`)."""
    node.BRANCH_CHANNELS = [32, 64]  # skip projections (MMSeg LRASPPHead branch_channels)
    node.POOL_KERNEL = [49, 49]  # the gate's average pool (h, w) (MMSeg LRASPPHead)
    node.POOL_STRIDE = [16, 20]  # its stride (h, w) (MMSeg LRASPPHead)


@SEM_SEG_HEADS_REGISTRY.register()
class LRASPPHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): branch_channels (LRASPP.BRANCH_CHANNELS, one per
    IN_FEATURE but the last), pool_kernel / pool_stride (LRASPP.POOL_KERNEL / POOL_STRIDE, (h, w)).

    Where the deepest map is smaller than the pooling kernel (inputs below ~392 x 392 at output
    stride 8), the window shrinks to the map; MMSegmentation's `nn.AvgPool2d` raises there."""

    config_nodes = ("LRASPP",)

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        branch_channels: list[int] = (32, 64),
        pool_kernel: list[int] = (49, 49),
        pool_stride: list[int] = (16, 20),
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = [input_shape[f].channels for f in self.in_features]
        if len(branch_channels) != len(in_channels) - 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.LRASPP.BRANCH_CHANNELS {list(branch_channels)} needs one "
                f"width per IN_FEATURE but the last ({self.in_features})"
            )
        channels, norm = self.channels, self.norm
        self.pool_kernel, self.pool_stride = tuple(pool_kernel), tuple(pool_stride)
        self.aspp_conv = conv_norm_relu(in_channels[-1], channels, 1, norm)
        self.pool_conv = nn.Conv2d(in_channels[-1], channels, 1, bias=False)
        self.conv_up_input = nn.Conv2d(channels, channels, 1)
        self.branch_convs = nn.ModuleList(
            nn.Conv2d(c, b, 1, bias=False) for c, b in zip(in_channels, branch_channels)
        )
        self.fuse_convs = nn.ModuleList(
            conv_norm_relu(channels + b, channels, 1, norm) for b in branch_channels
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        lraspp = cfg.MODEL.SEM_SEG_HEAD.LRASPP
        return cls.base_config(cfg, input_shape) | {
            "branch_channels": list(lraspp.BRANCH_CHANNELS),
            "pool_kernel": list(lraspp.POOL_KERNEL),
            "pool_stride": list(lraspp.POOL_STRIDE),
        }

    def image_pool(self, x: Tensor) -> Tensor:
        """sigmoid(1x1 conv(avg pool(x))), resized to x (align_corners=True as MMSegmentation)."""
        kernel = [min(k, s) for k, s in zip(self.pool_kernel, x.shape[-2:])]
        pooled = F.avg_pool2d(x, kernel, self.pool_stride)
        gate = torch.sigmoid(self.pool_conv(pooled))
        return F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        inputs = [features[f] for f in self.in_features]
        top = inputs[-1]
        x = self.conv_up_input(self.aspp_conv(top) * self.image_pool(top))
        for i in range(len(self.branch_convs) - 1, -1, -1):
            x = resize(x, inputs[i].shape[-2:], self.align_corners)
            x = self.fuse_convs[i](torch.cat([x, self.branch_convs[i](inputs[i])], dim=1))
        return x
