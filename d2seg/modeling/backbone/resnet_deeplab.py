"""The DeepLab ResNet variant Panoptic-DeepLab uses (paper sec. 4, "ResNet-52"/"R52"): a stem
of three 3x3 convs instead of one 7x7, and res5 dilated by 2 with multi-grid dilation rates
(1, 2, 4) over its three blocks, for output stride 16. Stages are Detectron2's own and the stem is
Detectron2's DeepLab project's; the project's builder (`build_resnet_deeplab_backbone`) covers only
R50+, this one also builds the basic-block R18 / R34 that CPU configs use (undilated there).

It also builds MMSegmentation's ResNetV1c "D8" / "D16" backbones of the semantic heads
(mmseg/models/backbones/resnet.py, `ResNetV1c`): with STEM_OUT_CHANNELS 64 the DeepLab stem is
V1c's 32-32-64 stem, stride sits in the 3x3 conv (STRIDE_IN_1X1 False), RES4_DILATION 2 +
RES5_DILATION 4 give output stride 8 and RES5_DILATION 2 alone output stride 16, and
CONTRACT_DILATION gives the first block of a dilated stage half its rate (V1c's
`contract_dilation=True`; as there, a res5 with a non-trivial multi-grid is left as it is).
R18 / R34 (basic blocks) stay undilated: output stride 32.

Parameter names equal the project's, so its checkpoints load as they are."""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from detectron2.projects.deeplab.resnet import DeepLabStem

from d2seg.config import register_config

# Blocks per stage by depth. Detectron2's `ResNet.make_default_stages` holds the same table but
# also fixes a 64-channel stem, which the 128-channel DeepLab stem is not.
_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def _block_dilations(dilation: int, grid: list[int], contract: bool) -> list[int]:
    """Per-block dilation of a stage: `dilation` x multi-grid rate; with `contract` and a flat
    grid the first block of a dilated stage gets `dilation // 2` (MMSegmentation's ResLayer)."""
    rates = [dilation * g for g in grid]
    if contract and dilation > 1 and all(g == 1 for g in grid):
        rates[0] = dilation // 2
    return rates


@register_config(
    "MODEL.RESNETS.STEM_TYPE",
    "MODEL.RESNETS.RES4_DILATION",
    "MODEL.RESNETS.CONTRACT_DILATION",
    "MODEL.RESNETS.RES5_MULTI_GRID",
)
def add_resnet_deeplab_config(cfg: CfgNode) -> None:
    """The dilated ResNet variants beside Detectron2's RESNETS keys: Panoptic-DeepLab's R-52
    (paper sec. 4: 3-conv stem, res5 dilated, multi-grid) and MMSegmentation's ResNetV1c-D8
    (mmseg/models/backbones/resnet.py: res4 dilation 2, res5 dilation 4)."""
    r = cfg.MODEL.RESNETS
    r.STEM_TYPE = "basic"  # "deeplab": three 3x3 convs (the last to 128 ch)
    r.RES4_DILATION = 1  # dilation of res4 (2 for output stride 8)
    r.CONTRACT_DILATION = False  # first block of a dilated stage at rate / 2 (MMSeg contract)
    r.RES5_MULTI_GRID = [1, 1, 1]  # dilation multipliers of res5's 3 blocks


@BACKBONE_REGISTRY.register()
def build_d2seg_resnet_deeplab_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """A ResNet with MODEL.RESNETS.STEM_TYPE ("basic" | "deeplab"), RES4_DILATION,
    RES5_DILATION, RES5_MULTI_GRID and CONTRACT_DILATION."""
    r = cfg.MODEL.RESNETS
    if r.STEM_TYPE == "deeplab":
        stem = DeepLabStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    elif r.STEM_TYPE == "basic":
        stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    else:
        raise ValueError(
            f"MODEL.RESNETS.STEM_TYPE must be 'basic' or 'deeplab', not {r.STEM_TYPE!r}"
        )
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH {r.DEPTH} is not one of {list(_BLOCKS_PER_STAGE)}")
    basic = r.DEPTH in (18, 34)
    if basic and (r.RES5_DILATION != 1 or r.RES4_DILATION != 1):
        raise ValueError(
            "MODEL.RESNETS.RES4_DILATION and RES5_DILATION must be 1 for R18/R34 (basic blocks), "
            f"not {r.RES4_DILATION} and {r.RES5_DILATION}"
        )
    if r.RES4_DILATION > 1 and r.RES5_DILATION == 1:
        raise ValueError(
            f"MODEL.RESNETS.RES4_DILATION {r.RES4_DILATION} needs a dilated res5 too "
            "(RES5_DILATION > 1), or res5 would downsample after a dilated res4"
        )
    if len(r.RES5_MULTI_GRID) != _BLOCKS_PER_STAGE[r.DEPTH][3]:
        raise ValueError(
            f"MODEL.RESNETS.RES5_MULTI_GRID {r.RES5_MULTI_GRID} needs one rate per "
            f"res5 block ({_BLOCKS_PER_STAGE[r.DEPTH][3]})"
        )
    stages = []
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stage_dilation = [1, 1, r.RES4_DILATION, r.RES5_DILATION]
    for index, num_blocks in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        dilated = stage_dilation[index] > 1
        first_stride = 1 if index == 0 or dilated else 2
        stage = {
            "num_blocks": num_blocks,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": r.NORM,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
        }
        if basic:
            stage["block_class"] = BasicBlock
        else:
            grid = r.RES5_MULTI_GRID if index == 3 else [1] * num_blocks
            stage.update(
                block_class=BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                num_groups=r.NUM_GROUPS,
                dilation_per_block=_block_dilations(
                    stage_dilation[index], list(grid), r.CONTRACT_DILATION
                ),
            )
        stages.append(ResNet.make_stage(**stage))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
