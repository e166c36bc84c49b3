"""UPerNet (Xiao et al., ECCV 2018), as MMSegmentation's `UPerHead` (`upernet_r50`,
`upernet_swin`): PSPNet's pyramid pooling module on the deepest feature (paper sec. 3.1), an FPN
over the others (1x1 lateral convs to 512 channels, top-down bilinear sums, a 3x3 conv per
level), every level upsampled to the finest and fused by a 3x3 conv. IN_FEATURES lists the
levels finest first (res2 ... res5); logits come out at the finest level's stride."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.sem_seg.decode_head import DecodeHead, conv_norm_relu, resize
from d2seg.modeling.sem_seg.psp_head import PyramidPooling


@SEM_SEG_HEADS_REGISTRY.register()
class UPerHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): pool_scales (PSP.POOL_SCALES)."""

    config_nodes = ("PSP",)

    @configurable
    def __init__(
        self, input_shape: dict[str, ShapeSpec], *, pool_scales: list[int] = (1, 2, 3, 6), **kwargs
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = [input_shape[f].channels for f in self.in_features]
        channels, norm = self.channels, self.norm
        self.ppm = PyramidPooling(
            in_channels[-1], channels, list(pool_scales), norm, self.align_corners
        )
        self.ppm_bottleneck = conv_norm_relu(
            in_channels[-1] + len(pool_scales) * channels, channels, 3, norm
        )
        self.lateral_convs = nn.ModuleList(
            conv_norm_relu(c, channels, 1, norm) for c in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            conv_norm_relu(channels, channels, 3, norm) for _ in in_channels[:-1]
        )
        self.fpn_bottleneck = conv_norm_relu(len(in_channels) * channels, channels, 3, norm)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape) | {
            "pool_scales": list(cfg.MODEL.SEM_SEG_HEAD.PSP.POOL_SCALES)
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        inputs = [features[f] for f in self.in_features]
        top = inputs[-1]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.ppm_bottleneck(torch.cat([top, *self.ppm(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            size = laterals[i - 1].shape[-2:]
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], size, self.align_corners)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [resize(x, size, self.align_corners) for x in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))
