"""OCRNet (Yuan et al., ECCV 2020), as MMSegmentation's cascade of `FCNHead` + `OCRHead`
(`ocrnet_r101-d8`, `ocrnet_hr48`): the auxiliary FCN head on res4 (256 channels) predicts the
soft object regions; OCR reduces res5 to 512 channels with a 3x3 conv, gathers one 512-d
representation per class (features averaged with the region map softmax-normalised over
positions, paper sec. 3.2 eq. 2), lets every pixel attend to them with 256-d keys (two 1x1
conv-BN-ReLU for queries and keys, one for values and one back to 512, scaled dot product,
eq. 3), and fuses [context, feature] with a 1x1 conv (eq. 4). The region map's loss is the
auxiliary loss (weight 0.4); its gradient also reaches it through OCR, as in MMSegmentation."""

from __future__ import annotations

from functools import partial

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.mixed_precision import fp32_softmax_affinity, scaled_dot_product
from d2seg.modeling.sem_seg.decode_head import (
    DecodeHead,
    conv_norm_relu,
    key_projection,
    resize,
    sem_seg_head_config,
)


def gather_object_regions(features: Tensor, regions: Tensor) -> Tensor:
    """(N, C, K): per class k, the features averaged with softmax over positions of its region
    logits (N, K, H, W). Mixed precision: the softmax is computed in float32
    (:func:`fp32_softmax_affinity`)."""
    weights = fp32_softmax_affinity(partial(torch.flatten, start_dim=2), regions)  # (N, K, HW)
    return torch.bmm(features.flatten(2), weights.transpose(1, 2))


class ObjectAttention(nn.Module):
    """Pixel-to-region attention: softmax(q k^T / sqrt(d)) v, projected back and fused. Mixed
    precision: the affinity and its softmax are computed in float32
    (:func:`fp32_softmax_affinity`)."""

    def __init__(self, channels: int, key_channels: int, norm: str):
        super().__init__()
        self.query = key_projection(channels, key_channels, norm)
        self.key = key_projection(channels, key_channels, norm)
        self.value = conv_norm_relu(channels, key_channels, 1, norm)
        self.out = conv_norm_relu(key_channels, channels, 1, norm)
        self.fuse = conv_norm_relu(2 * channels, channels, 1, norm)

    def forward(self, x: Tensor, objects: Tensor) -> Tensor:
        """x (N, C, H, W), objects (N, C, K)."""
        n, _, h, w = x.shape
        objects = objects.unsqueeze(-1)  # (N, C, K, 1), a map for the 1x1 convs
        query = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, D)
        key = self.key(objects).flatten(2)  # (N, D, K)
        value = self.value(objects).flatten(2).transpose(1, 2)  # (N, K, D)
        attention = fp32_softmax_affinity(scaled_dot_product, query, key)
        context = torch.bmm(attention, value).transpose(1, 2).reshape(n, -1, h, w)
        return self.fuse(torch.cat([self.out(context), x], dim=1))


@sem_seg_head_config("OCR")
def add_ocr_config(node: CfgNode) -> None:
    """OCRNet's object-contextual representations."""
    node.CHANNELS = 256  # key / query width (OCR paper sec. 3.3; head width 512 = CONVS_DIM)


@SEM_SEG_HEADS_REGISTRY.register()
class OCRHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s, which must have the auxiliary head): ocr_channels
    (OCR.CHANNELS)."""

    config_nodes = ("OCR",)

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, ocr_channels: int = 256, **kwargs):
        super().__init__(input_shape, **kwargs)
        if not self.aux_specs:
            raise ValueError(
                "OCRHead reads its soft object regions from the first auxiliary FCN head: set "
                "MODEL.SEM_SEG_HEAD.AUX (one head on res4 in MMSegmentation's OCRNet)"
            )
        in_channels = input_shape[self.in_features[0]].channels
        self.bottleneck = conv_norm_relu(in_channels, self.channels, 3, self.norm)
        self.object_attention = ObjectAttention(self.channels, ocr_channels, self.norm)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape) | {
            "ocr_channels": cfg.MODEL.SEM_SEG_HEAD.OCR.CHANNELS
        }

    def ocr(self, features: dict[str, Tensor], regions: Tensor) -> Tensor:
        x = self.bottleneck(features[self.in_features[0]])
        regions = resize(regions, x.shape[-2:], self.align_corners)  # same size at D8 already
        return self.object_attention(x, gather_object_regions(x, regions))

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        return self.ocr(features, self.aux_logits(features, 0))

    def losses(self, features: dict[str, Tensor], targets: Tensor) -> dict:
        """`loss_sem_seg` on OCR's logits and the auxiliary losses, the first on the region
        logits that OCR reads (computed once, as in MMSegmentation's cascade)."""
        regions = self.aux_logits(features, 0)
        logits = self.classifier(self.ocr(features, regions))
        losses = {"loss_sem_seg": self.loss(logits, targets) * self.loss_weight}
        return losses | self.aux_losses(features, targets, known_logits={0: regions})
