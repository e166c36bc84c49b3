"""ANN, Asymmetric Non-local Networks (Zhu et al., ICCV 2019), as MMSegmentation's `ANNHead`
(`ann_r50-d8`). Both blocks are non-local attention whose keys and values are pyramid-pooled
(paper sec. 3.2: adaptive average pools to 1, 3, 6 and 8 bins, 110 sampled positions):

- AFNB (sec. 3.3) fuses res4 into res5: queries from res5, keys and values from res4, 256-d
  (1x1 conv-BN-ReLU queries / keys, 1x1 conv values), output 1x1 conv back to res5's 2048
  channels; a 1x1 conv-BN (no ReLU) over [output, res5];
- then Dropout2d, a 3x3 conv-BN-ReLU to 512 channels and APNB (sec. 3.4): the same attention on
  that map with one projection shared by queries and keys, and a 1x1 conv-BN-ReLU over
  [output, input].

IN_FEATURES is [low, high] = ["res4", "res5"]; with both at stride 8 the logits come out there."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.mixed_precision import fp32_softmax_affinity, scaled_dot_product
from d2seg.modeling.sem_seg.decode_head import DecodeHead, conv_norm_relu, sem_seg_head_config


def pyramid_pool(x: Tensor, scales: list[int]) -> Tensor:
    """(N, C, sum s^2): adaptive average pools to s x s bins, flattened and concatenated."""
    return torch.cat([nn.functional.adaptive_avg_pool2d(x, s).flatten(2) for s in scales], 2)


class PyramidNonLocal(nn.Module):
    """softmax(q k^T / sqrt(d)) v with keys and values pyramid-pooled from `key_source`, then
    a 1x1 output conv. `shared` uses one projection for queries and keys (APNB). Mixed
    precision: the affinity and its softmax are computed in float32
    (:func:`fp32_softmax_affinity`)."""

    def __init__(
        self,
        query_channels: int,
        key_channels_in: int,
        channels: int,
        out_channels: int,
        pool_scales: list[int],
        norm: str,
        shared: bool,
    ):
        super().__init__()
        self.key = conv_norm_relu(key_channels_in, channels, 1, norm)
        self.query = self.key if shared else conv_norm_relu(query_channels, channels, 1, norm)
        self.value = nn.Conv2d(key_channels_in, channels, 1)
        self.out = nn.Conv2d(channels, out_channels, 1)
        self.pool_scales = list(pool_scales)

    def forward(self, x: Tensor, key_source: Tensor) -> Tensor:
        n, _, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, D)
        key = pyramid_pool(self.key(key_source), self.pool_scales)  # (N, D, S)
        value = pyramid_pool(self.value(key_source), self.pool_scales).transpose(1, 2)
        attention = fp32_softmax_affinity(scaled_dot_product, query, key)
        context = torch.bmm(attention, value).transpose(1, 2).reshape(n, -1, h, w)
        return self.out(context)


@sem_seg_head_config("ANN")
def add_ann_config(node: CfgNode) -> None:
    """ANN's asymmetric non-local blocks (MMSegmentation `ANNHead`)."""
    node.PROJECT_CHANNELS = 256  # key / query / value width (MMSeg ANNHead project_channels)
    node.KEY_POOL_SCALES = [1, 3, 6, 8]  # pyramid-pooled keys (ANN paper sec. 3.2)


@SEM_SEG_HEADS_REGISTRY.register()
class ANNHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): project_channels (ANN.PROJECT_CHANNELS),
    pool_scales (ANN.KEY_POOL_SCALES)."""

    config_nodes = ("ANN",)

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        project_channels: int = 256,
        pool_scales: list[int] = (1, 3, 6, 8),
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        if len(self.in_features) != 2:
            raise ValueError(
                f"ANNHead reads MODEL.SEM_SEG_HEAD.IN_FEATURES [low, high] (e.g. res4, res5), "
                f"not {self.in_features}"
            )
        low, high = (input_shape[f].channels for f in self.in_features)
        channels, norm = self.channels, self.norm
        self.afnb = PyramidNonLocal(high, low, project_channels, high, pool_scales, norm, False)
        self.afnb_fuse = Conv2d(2 * high, high, 1, bias=not norm, norm=get_norm(norm, high))
        self.dropout = nn.Dropout2d(self.dropout_ratio)
        self.bottleneck = conv_norm_relu(high, channels, 3, norm)
        self.apnb = PyramidNonLocal(
            channels, channels, project_channels, channels, pool_scales, norm, True
        )
        self.apnb_fuse = conv_norm_relu(2 * channels, channels, 1, norm)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        ann = cfg.MODEL.SEM_SEG_HEAD.ANN
        return cls.base_config(cfg, input_shape) | {
            "project_channels": ann.PROJECT_CHANNELS,
            "pool_scales": list(ann.KEY_POOL_SCALES),
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        low, high = (features[f] for f in self.in_features)
        fused = self.afnb_fuse(torch.cat([self.afnb(high, low), high], dim=1))
        x = self.bottleneck(self.dropout(fused))
        return self.apnb_fuse(torch.cat([self.apnb(x, x), x], dim=1))
