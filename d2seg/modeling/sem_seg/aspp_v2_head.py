"""DeepLab v2 (Chen et al., TPAMI 2018) on ResNet: ASPP as the sum of four 3x3 atrous convs
from res5 straight to the class logits, rates 6 / 12 / 18 / 24 (paper sec. 3.3, "ASPP-L"; the
authors' ResNet-101 prototxt, `fc1_voc12_c0..c3`). No dropout, no 1x1 classifier: the branches
are the classifier. MMSegmentation has no DeepLab v2."""

from __future__ import annotations

from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.sem_seg.decode_head import DecodeHead, sem_seg_head_config


@sem_seg_head_config("ASPP_V2")
def add_aspp_v2_config(node: CfgNode) -> None:
    """DeepLab v2's ASPP-L."""
    node.DILATIONS = [6, 12, 18, 24]  # ASPP-L rates (DeepLab v2 paper sec. 3.3)


@SEM_SEG_HEADS_REGISTRY.register()
class ASPPV2Head(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s; CONVS_DIM and DROPOUT are unused): dilations
    (ASPP_V2.DILATIONS)."""

    config_nodes = ("ASPP_V2",)

    has_classifier = False

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, dilations: list[int], **kwargs):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, self.num_classes, 3, padding=rate, dilation=rate)
            for rate in dilations
        )
        for branch in self.branches:  # the authors' init: Gaussian std 0.01, zero bias
            nn.init.normal_(branch.weight, std=0.01)
            nn.init.zeros_(branch.bias)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape) | {
            "dilations": list(cfg.MODEL.SEM_SEG_HEAD.ASPP_V2.DILATIONS)
        }

    def predict(self, features: dict[str, Tensor]) -> Tensor:
        x = features[self.in_features[0]]
        return sum(branch(x) for branch in self.branches)
