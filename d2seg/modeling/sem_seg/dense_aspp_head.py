"""DenseASPP (Yang et al., CVPR 2018): atrous layers with rates 3, 6, 12, 18, 24 (paper sec. 3.2)
densely connected, each reading the input and every earlier layer's output; a layer is
pre-activated BN-ReLU, 1x1 conv to 512, BN-ReLU, 3x3 atrous conv to 128, Dropout2d 0.1 (the
authors' DenseASPP code, DenseNet-161 setting `d_feature0` 512, `d_feature1` 128; the first
layer skips the leading BN, its input being already normalised). The classifier reads the
concatenation of the input and all five outputs (in + 5 x 128 channels). MMSegmentation has
no DenseASPP; CONVS_DIM is the 1x1 width here."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.sem_seg.decode_head import Classifier, DecodeHead, sem_seg_head_config


def dense_aspp_layer(
    in_channels: int, mid: int, out: int, rate: int, norm: str, dropout: float, first: bool
) -> nn.Sequential:
    """[BN] ReLU 1x1 BN ReLU 3x3(rate) Dropout2d."""
    layers = [] if first else [get_norm(norm, in_channels)]
    layers += [
        nn.ReLU(),
        nn.Conv2d(in_channels, mid, 1, bias=not norm),
        get_norm(norm, mid),
        nn.ReLU(),
        nn.Conv2d(mid, out, 3, padding=rate, dilation=rate, bias=not norm),
        nn.Dropout2d(dropout),
    ]
    return nn.Sequential(*[layer for layer in layers if layer is not None])


@sem_seg_head_config("DENSE_ASPP")
def add_dense_aspp_config(node: CfgNode) -> None:
    """DenseASPP's densely connected atrous layers."""
    node.DILATIONS = [3, 6, 12, 18, 24]  # rates (DenseASPP paper sec. 3.2)
    node.GROWTH = 128  # output width of each layer (authors' d_feature1)


@SEM_SEG_HEADS_REGISTRY.register()
class DenseASPPHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): dilations (DENSE_ASPP.DILATIONS), growth
    (DENSE_ASPP.GROWTH, each layer's output width)."""

    config_nodes = ("DENSE_ASPP",)

    has_classifier = False

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        dilations: list[int] = (3, 6, 12, 18, 24),
        growth: int = 128,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.dense_layers = nn.ModuleList(
            dense_aspp_layer(
                in_channels + i * growth,
                self.channels,
                growth,
                rate,
                self.norm,
                self.dropout_ratio,
                first=i == 0,
            )
            for i, rate in enumerate(dilations)
        )
        total = in_channels + len(dilations) * growth
        self.classifier = Classifier(total, self.num_classes, self.dropout_ratio)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        dense = cfg.MODEL.SEM_SEG_HEAD.DENSE_ASPP
        return cls.base_config(cfg, input_shape) | {
            "dilations": list(dense.DILATIONS),
            "growth": dense.GROWTH,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        x = features[self.in_features[0]]
        for layer in self.dense_layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x
