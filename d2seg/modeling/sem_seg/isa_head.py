"""ISANet (Huang et al., "Interlaced Sparse Self-Attention", the OCNet authors, IJCV 2021), as
MMSegmentation's `ISAHead` (`isanet_r50-d8`): a 3x3 conv to 512 channels, then self-attention
factorised in two sparse steps (paper sec. 3.1): a long-range step among pixels that share their
offset inside 8 x 8 blocks (one attention per offset, over the interlaced grid of blocks), then a
short-range step inside each 8 x 8 block; the map is padded symmetrically to a multiple of 8
first. Each step is dot-product attention with 256-d queries and keys (two 1x1 conv-BN-ReLU
each, scaled by 256^-0.5), 1x1 conv values and a 1x1 conv-BN-ReLU output; a 1x1 conv fuses
[result, input]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.mixed_precision import fp32_softmax_affinity, scaled_dot_product
from d2seg.modeling.sem_seg.decode_head import (
    DecodeHead,
    conv_norm_relu,
    key_projection,
    sem_seg_head_config,
)


class SelfAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v over all positions of each map, then a 1x1 conv-norm-ReLU.
    Mixed precision: the affinity and its softmax are computed in float32
    (:func:`fp32_softmax_affinity`)."""

    def __init__(self, channels: int, key_channels: int, norm: str):
        super().__init__()
        self.query = key_projection(channels, key_channels, norm)
        self.key = key_projection(channels, key_channels, norm)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = conv_norm_relu(channels, channels, 1, norm)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)
        key = self.key(x).flatten(2)
        attention = fp32_softmax_affinity(scaled_dot_product, query, key)
        context = torch.bmm(attention, self.value(x).flatten(2).transpose(1, 2))
        return self.out(context.transpose(1, 2).reshape(n, c, h, w))


def interlaced_sparse_attention(
    x: Tensor, long_range: nn.Module, short_range: nn.Module, block: tuple[int, int]
) -> Tensor:
    """Apply `long_range` to each interlaced grid (pixels with one offset inside the blocks),
    then `short_range` to each block; x (N, C, H, W) is padded symmetrically to whole blocks."""
    n, c, h, w = x.shape
    bh, bw = block
    gh, gw = -(-h // bh), -(-w // bw)  # blocks per column / row
    pad_h, pad_w = gh * bh - h, gw * bw - w
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    x = x.view(n, c, gh, bh, gw, bw)
    # long range: batch over offsets (bh, bw), attend over the block grid (gh, gw)
    x = x.permute(0, 3, 5, 1, 2, 4).reshape(n * bh * bw, c, gh, gw)
    x = long_range(x).view(n, bh, bw, c, gh, gw)
    # short range: batch over blocks (gh, gw), attend inside each block (bh, bw)
    x = x.permute(0, 4, 5, 3, 1, 2).reshape(n * gh * gw, c, bh, bw)
    x = short_range(x).view(n, gh, gw, c, bh, bw)
    x = x.permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * bh, gw * bw)
    return x[:, :, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]


@sem_seg_head_config("ISA")
def add_isa_config(node: CfgNode) -> None:
    """ISANet's interlaced sparse self-attention (MMSegmentation `ISAHead`)."""
    node.CHANNELS = 256  # query / key width (MMSeg ISAHead isa_channels)
    node.DOWN_FACTOR = [8, 8]  # block size (h, w) (MMSeg ISAHead down_factor)


@SEM_SEG_HEADS_REGISTRY.register()
class ISAHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): isa_channels (ISA.CHANNELS), down_factor
    (ISA.DOWN_FACTOR, the block size)."""

    config_nodes = ("ISA",)

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        isa_channels: int = 256,
        down_factor: tuple[int, int] = (8, 8),
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels, channels = input_shape[self.in_features[0]].channels, self.channels
        self.in_conv = conv_norm_relu(in_channels, channels, 3, self.norm)
        self.long_range = SelfAttention(channels, isa_channels, self.norm)
        self.short_range = SelfAttention(channels, isa_channels, self.norm)
        self.out_conv = conv_norm_relu(2 * channels, channels, 1, self.norm)
        self.down_factor = tuple(down_factor)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        isa = cfg.MODEL.SEM_SEG_HEAD.ISA
        return cls.base_config(cfg, input_shape) | {
            "isa_channels": isa.CHANNELS,
            "down_factor": tuple(isa.DOWN_FACTOR),
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        x = self.in_conv(features[self.in_features[0]])
        y = interlaced_sparse_attention(x, self.long_range, self.short_range, self.down_factor)
        return self.out_conv(torch.cat([y, x], dim=1))
