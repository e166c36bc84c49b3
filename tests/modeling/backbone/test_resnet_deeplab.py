"""The dilated ResNet (ResNetV1c-D8, Panoptic-DeepLab R-52) against torchvision's."""

from __future__ import annotations

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from d2seg.config import add_d2seg_config


def _resnet_cfg(depth=50, res4=2, res5=4, contract=True, norm="BN"):
    cfg = add_d2seg_config(get_cfg())
    r = cfg.MODEL.RESNETS
    cfg.MODEL.BACKBONE.NAME = "build_d2seg_resnet_deeplab_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    r.DEPTH, r.NORM, r.STEM_TYPE, r.STEM_OUT_CHANNELS = depth, norm, "deeplab", 64
    r.STRIDE_IN_1X1, r.RES4_DILATION, r.RES5_DILATION = False, res4, res5
    r.CONTRACT_DILATION, r.OUT_FEATURES = contract, ["res2", "res3", "res4", "res5"]
    return cfg


def _copy_torchvision_bottlenecks(ours, theirs) -> None:
    """Load torchvision's layer1..4 weights into res2..res5 (names mapped one to one)."""
    names = {
        "bn1": "conv1.norm",
        "bn2": "conv2.norm",
        "bn3": "conv3.norm",
        "downsample.0": "shortcut",
        "downsample.1": "shortcut.norm",
    }
    state = {}
    for key, value in theirs.state_dict().items():
        if not key.startswith("layer"):
            continue
        stage, block, rest = key.split(".", 2)
        module, leaf = rest.rsplit(".", 1)
        state[f"res{int(stage[5:]) + 1}.{block}.{names.get(module, module)}.{leaf}"] = value
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("stem") for k in missing), missing


def test_d8_resnet_equals_torchvision_dilated_resnet50():
    """ResNetV1c-D8 with contract_dilation = torchvision's replace_stride_with_dilation
    (False, True, True), whose first block of a dilated stage keeps the previous rate (1 in res4,
    2 in res5): same per-block dilations, same outputs from the same weights."""
    backbone = build_backbone(_resnet_cfg()).eval()
    reference = torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=[False, True, True]
    ).eval()
    _copy_torchvision_bottlenecks(backbone, reference)
    ours = [b.conv2.dilation[0] for s in ("res4", "res5") for b in getattr(backbone, s)]
    theirs = [b.conv2.dilation[0] for s in ("layer3", "layer4") for b in getattr(reference, s)]
    assert ours == theirs == [1, 2, 2, 2, 2, 2, 2, 4, 4]
    x = torch.randn(1, 64, 32, 32)  # a stem output
    with torch.no_grad():
        y = x
        for ours_stage, theirs_stage in zip(
            [backbone.res2, backbone.res3, backbone.res4, backbone.res5],
            [reference.layer1, reference.layer2, reference.layer3, reference.layer4],
        ):
            y_ours, y = ours_stage(y), theirs_stage(y)
            torch.testing.assert_close(y_ours, y)
    shapes = backbone.output_shape()
    assert [shapes[f].stride for f in ("res2", "res3", "res4", "res5")] == [4, 8, 8, 8]
    assert [shapes[f].channels for f in ("res2", "res3", "res4", "res5")] == [256, 512, 1024, 2048]


def test_resnet_v1c_stem_and_dilation_variants():
    backbone = build_backbone(_resnet_cfg(res4=1, res5=2, contract=False))
    # ResNetV1c stem: 3x3 convs 3 -> 32 (stride 2), 32 -> 32, 32 -> 64, each + BN (2 params/ch)
    stem = [3 * 32 * 9 + 64, 32 * 32 * 9 + 64, 32 * 64 * 9 + 128]
    assert sum(p.numel() for p in backbone.stem.parameters()) == sum(stem)
    assert backbone.output_shape()["res5"].stride == 16  # D16: only res5 dilated
    assert [b.conv2.dilation[0] for b in backbone.res5] == [2, 2, 2]  # no contraction
    contracted = build_backbone(_resnet_cfg(res4=1, res5=2, contract=True))
    assert [b.conv2.dilation[0] for b in contracted.res5] == [1, 2, 2]
    cfg = _resnet_cfg(res4=1, res5=2, contract=True)
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]  # a multi-grid res5 is not contracted
    assert [b.conv2.dilation[0] for b in build_backbone(cfg).res5] == [2, 4, 8]
    with pytest.raises(ValueError, match="RES4_DILATION 2 needs a dilated res5"):
        build_backbone(_resnet_cfg(res4=2, res5=1))
    with pytest.raises(ValueError, match="R18/R34"):
        cfg = _resnet_cfg(depth=18, res4=2, res5=4)
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.RES5_MULTI_GRID = 64, [1, 1]
        build_backbone(cfg)
