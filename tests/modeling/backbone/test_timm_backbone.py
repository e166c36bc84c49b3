"""The timm adapter (`build_timm_backbone`): feature names, strides and channels of each model
family against the architectures' published layouts, output stride, Swin's NHWC outputs and
output norms, and HRNetV2's concatenated branches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from d2seg.config import add_d2seg_config

timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'd2seg[timm]')")

# The smallest variant of each family the issue names, with its published feature layout:
# (timm name, {feature: (channels, stride)}) at output stride 32.
LAYOUTS = {
    # MobileNetV3-Large (Howard et al., ICCV 2019, table 1): 16 @ 2, 24 @ 4, 40 @ 8, 112 @ 16,
    # and the 960-ch 1x1 conv at 32
    "mobilenetv3": (
        "mobilenetv3_large_100",
        {"res1": (16, 2), "res2": (24, 4), "res3": (40, 8), "res4": (112, 16), "res5": (960, 32)},
    ),
    # HRNetV2-W18-Small (MMSegmentation's hr18s): branches 18 / 36 / 72 / 144 at 4 ... 32
    "hrnet": (
        "hrnet_w18_small_v2",
        {"res2": (18, 4), "res3": (36, 8), "res4": (72, 16), "res5": (144, 32)},
    ),
    # ResNeSt (Zhang et al., 2020): ResNet stage widths 256 ... 2048, deep stem 64 @ 2
    "resnest": (
        "resnest14d",
        {
            "res1": (64, 2),
            "res2": (256, 4),
            "res3": (512, 8),
            "res4": (1024, 16),
            "res5": (2048, 32),
        },
    ),
    # Xception-65 (DeepLabV3+, Chen et al., ECCV 2018, fig. 4) at output stride 16 (the
    # paper's): entry flow 128 / 256 / 728, exit flow 1024 then 2048, both at stride 16
    "xception": (
        "xception65",
        {
            "res1": (128, 2),
            "res2": (256, 4),
            "res3": (728, 8),
            "res4": (1024, 16),
            "res5": (2048, 16),
        },
    ),
}
SIZE = 64


def test_defaults_are_timms_own():
    t = add_d2seg_config(get_cfg()).MODEL.TIMM
    assert (t.NAME, list(t.OUT_FEATURES)) == ("", ["res2", "res3", "res4", "res5"])
    assert (t.OUTPUT_STRIDE, t.DROP_PATH_RATE, t.OUTPUT_NORM) == (32, -1.0, False)
    assert (t.CONCAT_FEATURE, t.NORM) == ("", "BN")


def _needs(name: str) -> None:
    if name not in timm.list_models(name):
        pytest.skip(f"timm {timm.__version__} has no model {name!r}")


def _cfg(name: str, features: list[str], **timm_keys) -> object:
    cfg = add_d2seg_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
    cfg.MODEL.TIMM.NAME, cfg.MODEL.TIMM.OUT_FEATURES = name, features
    for key, value in timm_keys.items():
        setattr(cfg.MODEL.TIMM, key, value)
    return cfg


def _run(backbone, size=SIZE):
    torch.manual_seed(0)
    with torch.no_grad():
        return backbone.eval()(torch.randn(1, 3, size, size))


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_features_have_the_published_channels_and_strides(family):
    name, layout = LAYOUTS[family]
    _needs(name)
    output_stride = min(32, max(stride for _, stride in layout.values()))
    backbone = build_backbone(_cfg(name, list(layout), OUTPUT_STRIDE=output_stride))
    assert {f: (s.channels, s.stride) for f, s in backbone.output_shape().items()} == layout
    outputs = _run(backbone)
    assert list(outputs) == list(layout)
    for feature, (channels, stride) in layout.items():
        assert outputs[feature].shape == (1, channels, SIZE // stride, SIZE // stride), feature


@pytest.mark.parametrize(
    ("name", "output_stride", "strides"),
    [
        ("mobilenetv3_large_100", 8, {"res3": 8, "res4": 8, "res5": 8}),
        ("resnest14d", 16, {"res3": 8, "res4": 16, "res5": 16}),
    ],
)
def test_output_stride_dilates_the_last_stages(name, output_stride, strides):
    _needs(name)
    backbone = build_backbone(_cfg(name, list(strides), OUTPUT_STRIDE=output_stride))
    assert {f: s.stride for f, s in backbone.output_shape().items()} == strides
    outputs = _run(backbone)
    for feature, stride in strides.items():
        assert outputs[feature].shape[-2:] == (SIZE // stride, SIZE // stride), feature


def test_models_without_dilation_reject_an_output_stride():
    with pytest.raises(ValueError, match="MODEL.TIMM.NAME 'swin_tiny_patch4_window7_224'"):
        build_backbone(_cfg("swin_tiny_patch4_window7_224", ["res5"], OUTPUT_STRIDE=16))
    with pytest.raises(ValueError, match="OUTPUT_STRIDE must be 8, 16 or 32, not 4"):
        build_backbone(_cfg("mobilenetv3_large_100", ["res5"], OUTPUT_STRIDE=4))
    with pytest.raises(ValueError, match="'stage5' is not of the form 'res<k>'"):
        build_backbone(_cfg("mobilenetv3_large_100", ["stage5"]))
    with pytest.raises(ValueError, match="MODEL.TIMM.NAME is empty"):
        build_backbone(_cfg("", ["res5"]))
    with pytest.raises(ValueError, match="MODEL.TIMM.NORM must be 'BN' or 'SyncBN', not 'GN'"):
        build_backbone(_cfg("mobilenetv3_large_100", ["res5"], NORM="GN"))


def test_swin_outputs_are_nchw_after_a_layer_norm_per_output():
    """Swin-T (Liu et al., ICCV 2021, sec. 3.3): C = 96 doubling per stage, strides 4 ... 32.
    MMSegmentation's Swin applies LayerNorm `norm{i}` over the channels of every output; the
    adapter's maps equal timm's NHWC maps normalised that way, then permuted."""
    name = "swin_tiny_patch4_window7_224"
    _needs(name)
    layout = {"res2": (96, 4), "res3": (192, 8), "res4": (384, 16), "res5": (768, 32)}
    backbone = build_backbone(_cfg(name, list(layout), OUTPUT_NORM=True)).eval()
    assert {f: (s.channels, s.stride) for f, s in backbone.output_shape().items()} == layout
    torch.manual_seed(0)
    for norm in backbone.output_norms:  # non-trivial affine parameters
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(1, 3, 96, 64)  # not square: an NHWC / NCHW mix-up would show
    with torch.no_grad():
        outputs = backbone(x)
        raw = backbone.model(x)
    assert [m.shape[-1] for m in raw] == [c for c, _ in layout.values()]  # timm's are NHWC
    for (feature, out), nhwc, norm in zip(outputs.items(), raw, backbone.output_norms):
        channels, stride = layout[feature]
        assert out.shape == (1, channels, 96 // stride, 64 // stride)
        mean = nhwc.mean(-1, keepdim=True)
        var = nhwc.var(-1, unbiased=False, keepdim=True)
        expected = (nhwc - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
        torch.testing.assert_close(out, expected.permute(0, 3, 1, 2), msg=feature)


def test_hrnet_exposes_the_branches_and_their_resized_concatenation():
    """HRNetV2 (Wang et al., TPAMI 2020, sec. 3): the four branch outputs, not timm's
    classification "incre" features (128 / 256 / 512 / 1024 channels); the extra feature is
    MMSegmentation's `resize_concat`: every branch bilinearly resized to the finest, concat."""
    name = "hrnet_w18_small_v2"
    _needs(name)
    branches = ["res2", "res3", "res4", "res5"]
    backbone = build_backbone(_cfg(name, branches, CONCAT_FEATURE="hr_concat"))
    assert backbone.output_shape()["hr_concat"] == ShapeSpec(channels=18 + 36 + 72 + 144, stride=4)
    outputs = _run(backbone)
    size = outputs["res2"].shape[-2:]
    expected = torch.cat(
        [
            F.interpolate(outputs[f], size=size, mode="bilinear", align_corners=False)
            for f in branches
        ],
        dim=1,
    )
    torch.testing.assert_close(outputs["hr_concat"], expected)


def test_sync_bn_converts_every_batch_norm_and_keeps_the_outputs():
    """timm fuses activations into BatchNormAct2d; a plain SyncBatchNorm would drop them."""
    bn = build_backbone(_cfg("mobilenetv3_large_100", ["res3"])).eval()
    sync = build_backbone(_cfg("mobilenetv3_large_100", ["res3"], NORM="SyncBN")).eval()
    norms = [m for m in sync.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    sync.load_state_dict(bn.state_dict())
    torch.testing.assert_close(_run(sync)["res3"], _run(bn)["res3"])
