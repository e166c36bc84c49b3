"""PSPNet (Zhao et al., CVPR 2017): the pyramid pooling module of paper sec. 3.2 (average pools
to 1x1, 2x2, 3x3 and 6x6 bins, a 1x1 conv each, upsampled and concatenated with the feature),
then a 3x3 bottleneck conv, as MMSegmentation's `PSPHead` (512 channels in `pspnet_r50-d8`)."""

from __future__ import annotations

import torch
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


class PyramidPooling(nn.Module):
    """Adaptive average pooling to each bin size, a 1x1 conv-norm-ReLU each, resized back."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        pool_scales: list[int],
        norm: str,
        align_corners: bool,
    ):
        super().__init__()
        self.align_corners = align_corners
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_norm_relu(in_channels, channels, 1, norm))
            for s in pool_scales
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return [resize(stage(x), x.shape[-2:], self.align_corners) for stage in self.stages]


@sem_seg_head_config("PSP")
def add_psp_config(node: CfgNode) -> None:
    """PSPNet's pyramid pooling module (also UPerNet's)."""
    node.POOL_SCALES = [1, 2, 3, 6]  # pyramid bins (PSPNet paper sec. 3.2)


@SEM_SEG_HEADS_REGISTRY.register()
class PSPHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): pool_scales (PSP.POOL_SCALES)."""

    config_nodes = ("PSP",)

    @configurable
    def __init__(
        self, input_shape: dict[str, ShapeSpec], *, pool_scales: list[int] = (1, 2, 3, 6), **kwargs
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.ppm = PyramidPooling(
            in_channels, self.channels, list(pool_scales), self.norm, self.align_corners
        )
        self.bottleneck = conv_norm_relu(
            in_channels + len(pool_scales) * self.channels, self.channels, 3, self.norm
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape) | {
            "pool_scales": list(cfg.MODEL.SEM_SEG_HEAD.PSP.POOL_SCALES)
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        x = features[self.in_features[0]]
        return self.bottleneck(torch.cat([x, *self.ppm(x)], dim=1))
