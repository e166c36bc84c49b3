"""FCN (Long et al., CVPR 2015) on a dilated backbone, as MMSegmentation's `FCNHead` in its
`fcn_r50-d8` configs: two 3x3 convs to 512 channels on res5, then a 3x3 conv over the
concatenation of res5 and their output (`concat_input=True`)."""

from __future__ import annotations

from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor

from d2seg.modeling.sem_seg.decode_head import DecodeHead, FCNConvs, sem_seg_head_config


@sem_seg_head_config("FCN")
def add_fcn_config(node: CfgNode) -> None:
    """FCN head (MMSegmentation `FCNHead` in `fcn_r50-d8`)."""
    node.NUM_CONVS = 2  # 3x3 convs of the FCN head (MMSeg FCNHead num_convs)
    node.CONCAT_INPUT = True  # concat input and conv output, then a 3x3 conv (MMSeg FCNHead)


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): num_convs (FCN.NUM_CONVS), concat_input
    (FCN.CONCAT_INPUT)."""

    config_nodes = ("FCN",)

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_convs: int = 2,
        concat_input: bool = True,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.fcn = FCNConvs(in_channels, self.channels, num_convs, concat_input, self.norm)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        fcn = cfg.MODEL.SEM_SEG_HEAD.FCN
        return cls.base_config(cfg, input_shape) | {
            "num_convs": fcn.NUM_CONVS,
            "concat_input": fcn.CONCAT_INPUT,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        return self.fcn(features[self.in_features[0]])
