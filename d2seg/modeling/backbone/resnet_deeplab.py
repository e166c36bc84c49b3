"""The DeepLab ResNet variant Panoptic-DeepLab uses (paper sec. 4, "ResNet-52"/"R52"): a stem
of three 3x3 convs instead of one 7x7, and res5 dilated by 2 with multi-grid dilation rates
(1, 2, 4) over its three blocks, for output stride 16. Stages are Detectron2's own."""

from __future__ import annotations

import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    ResNet,
)
from fvcore.nn import weight_init

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                     152: [3, 8, 36, 3]}


class DeepLabStem(CNNBlockBase):
    """conv3x3 stride 2 (out/2) -> conv3x3 (out/2) -> conv3x3 (out) -> maxpool 3x3 stride 2."""

    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 4)
        half = out_channels // 2
        self.conv1 = Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False,
                            norm=get_norm(norm, half))
        self.conv2 = Conv2d(half, half, 3, padding=1, bias=False, norm=get_norm(norm, half))
        self.conv3 = Conv2d(half, out_channels, 3, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for conv in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(conv)

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


@BACKBONE_REGISTRY.register()
def build_resnet_deeplab_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """A ResNet with MODEL.RESNETS.STEM_TYPE ("basic" | "deeplab") and RES5_MULTI_GRID."""
    r = cfg.MODEL.RESNETS
    if r.STEM_TYPE == "deeplab":
        stem = DeepLabStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    elif r.STEM_TYPE == "basic":
        stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    else:
        raise ValueError(f"MODEL.RESNETS.STEM_TYPE must be 'basic' or 'deeplab', not "
                         f"{r.STEM_TYPE!r}")
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH {r.DEPTH} is not one of {list(_BLOCKS_PER_STAGE)}")
    basic = r.DEPTH in (18, 34)
    if basic and r.RES5_DILATION != 1:
        raise ValueError("MODEL.RESNETS.RES5_DILATION must be 1 for R18/R34 (basic blocks)")
    if len(r.RES5_MULTI_GRID) != _BLOCKS_PER_STAGE[r.DEPTH][3]:
        raise ValueError(f"MODEL.RESNETS.RES5_MULTI_GRID {r.RES5_MULTI_GRID} needs one rate per "
                         f"res5 block ({_BLOCKS_PER_STAGE[r.DEPTH][3]})")
    stages = []
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    for index, num_blocks in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        dilated = index == 3 and r.RES5_DILATION > 1
        first_stride = 1 if index == 0 or dilated else 2
        stage = {"num_blocks": num_blocks, "in_channels": in_channels,
                 "out_channels": out_channels, "norm": r.NORM,
                 "stride_per_block": [first_stride] + [1] * (num_blocks - 1)}
        if basic:
            stage["block_class"] = BasicBlock
        else:
            dilation = r.RES5_DILATION if index == 3 else 1
            grid = r.RES5_MULTI_GRID if index == 3 else [1] * num_blocks
            stage.update(block_class=BottleneckBlock, bottleneck_channels=bottleneck_channels,
                         stride_in_1x1=r.STRIDE_IN_1X1, num_groups=r.NUM_GROUPS,
                         dilation_per_block=[dilation * g for g in grid])
        stages.append(ResNet.make_stage(**stage))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
