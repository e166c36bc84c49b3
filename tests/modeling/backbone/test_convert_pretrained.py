"""tools/convert_pretrained.py on randomly initialised ImageNet models: convert -> load through
Detectron2's checkpointer (no missing / unexpected backbone key) -> the backbone's features
equal the source model's; mismatched checkpoints fail naming the config key or the weights."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone

from d2seg.config import load_config
from tests.helpers.configs import CONFIG_ROOT, CPU
from tests.helpers.modules import randomize_bn_statistics
from tests.helpers.scripts import load_script

convert_pretrained = load_script("tools/convert_pretrained.py")
SEM_SEG = "Cityscapes-SemanticSegmentation"


def _convert_and_load(tmp_path, source_state, kind, config, opts=(), suffix=".pkl"):
    """Run the script's main() as the command line would, then load its output with
    Detectron2's checkpointer; the model, and the backbone keys the file lacks / has extra."""
    checkpoint, converted = tmp_path / "imagenet.pth", tmp_path / f"converted{suffix}"
    torch.save(source_state, checkpoint)
    config_file = str(CONFIG_ROOT / config)
    convert_pretrained.main(
        ["--config-file", config_file, "--source", kind, str(checkpoint), str(converted), *opts]
    )
    model = torch.nn.Module()  # the backbone under Detectron2's "backbone." prefix
    model.backbone = build_backbone(load_config(config_file, CPU + list(opts))).eval()
    DetectionCheckpointer(model).load(str(converted))
    if suffix == ".pkl":
        with open(converted, "rb") as f:
            written = pickle.load(f)["model"]
    else:
        written = torch.load(converted, weights_only=True)["model"]
    ours = {k for k in model.state_dict() if k.startswith("backbone.")}
    return model, sorted(ours - set(written)), sorted(set(written) - ours)


TIMM_CASES = {
    # (config, overrides, timm arguments of the adapter for that config)
    "mobilenetv3": (
        f"{SEM_SEG}/lraspp_M-V3-D8_512x1024_320k.yaml",
        [],
        {"out_indices": (-5, -4, -1), "output_stride": 8},
    ),
    "hrnet": (
        f"{SEM_SEG}/ocrnet_HRNetV2_W18_512x1024_80k.yaml",
        ["MODEL.TIMM.NAME", "hrnet_w18_small_v2"],
        {"out_indices": (-4, -3, -2, -1), "feature_location": ""},
    ),
}


@pytest.mark.parametrize("case", sorted(TIMM_CASES))
def test_timm_checkpoint_round_trip_gives_timms_own_features(case, tmp_path):
    """The reference is timm loading the same file into its own feature model
    (`pretrained_cfg_overlay` file, no download)."""
    timm = pytest.importorskip("timm")
    config, opts, timm_kwargs = TIMM_CASES[case]
    name = opts[1] if opts else load_config(str(CONFIG_ROOT / config)).MODEL.TIMM.NAME
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False)
    model, missing, unexpected = _convert_and_load(
        tmp_path, source.state_dict(), "timm", config, opts
    )
    assert missing == [] and unexpected == []
    reference = timm.create_model(
        name,
        pretrained=True,
        features_only=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "imagenet.pth")},
        **timm_kwargs,
    ).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = reference(x)
    features = model.backbone.output_shape()
    for name, expected in zip([f for f in features if f != "hr_concat"], theirs):
        torch.testing.assert_close(ours[name], expected, msg=name)


def _resnet_features(net, x):
    """torchvision / timm ResNet: stem, then layer1..4 outputs as res2..res5."""
    act = getattr(net, "act1", None) or net.relu  # timm / torchvision name
    x = net.maxpool(act(net.bn1(net.conv1(x))))
    out = {}
    for i in range(1, 5):
        x = getattr(net, f"layer{i}")(x)
        out[f"res{i + 1}"] = x
    return out


R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
R18 += ["MODEL.RESNETS.RES4_DILATION", "1"]
R18 += ["MODEL.RESNETS.RES5_DILATION", "1", "MODEL.RESNETS.RES5_MULTI_GRID", "[1, 1]"]
R18 += ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"]
R18 += ["MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']"]
BASIC_STEM = ["MODEL.RESNETS.STEM_TYPE", "basic"]
FCN = f"{SEM_SEG}/fcn_R_50_D8_512x1024_80k.yaml"


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_torchvision_resnet_maps_to_the_7x7_stem_backbone(suffix, tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None).eval()
    randomize_bn_statistics(source)
    model, missing, unexpected = _convert_and_load(
        tmp_path, source.state_dict(), "resnet", FCN, R18 + BASIC_STEM, suffix
    )
    assert missing == [] and unexpected == []
    _assert_same_resnet_features(model, source)


def test_deep_stem_resnet_v1c_maps_to_the_deeplab_stem_backbone(tmp_path):
    """timm's ResNet with the deep 32-32-64 stem (resnet*c, MMSegmentation's ResNetV1c)."""
    pytest.importorskip("timm")
    from timm.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    source = ResNet(BasicBlock, [2, 2, 2, 2], stem_type="deep", stem_width=32).eval()
    randomize_bn_statistics(source)
    assert "conv1.0.weight" in source.state_dict()
    model, missing, unexpected = _convert_and_load(
        tmp_path, source.state_dict(), "resnet", FCN, R18
    )
    assert missing == [] and unexpected == []
    _assert_same_resnet_features(model, source)


def _assert_same_resnet_features(model, source):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model.backbone(x), _resnet_features(source, x)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], msg=name)


def _cfg(config, opts=()):
    return load_config(str(CONFIG_ROOT / config), CPU + list(opts))


def test_mismatched_checkpoints_fail_naming_the_key():
    r18 = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match="7x7 stem .*STEM_TYPE 'basic'.*has STEM_TYPE 'deeplab'"):
        convert_pretrained.convert(r18, "resnet", _cfg(FCN, R18))
    with pytest.raises(ValueError, match="STRIDE_IN_1X1 False"):
        opts = R18 + BASIC_STEM + ["MODEL.RESNETS.STRIDE_IN_1X1", "True"]
        convert_pretrained.convert(r18, "resnet", _cfg(FCN, opts))
    with pytest.raises(ValueError, match=r"missing \(80\): res2\.2\."):
        opts = (
            R18
            + BASIC_STEM
            + ["MODEL.RESNETS.DEPTH", "34", "MODEL.RESNETS.RES5_MULTI_GRID", "[1,1,1]"]
        )
        convert_pretrained.convert(r18, "resnet", _cfg(FCN, opts))
    with pytest.raises(ValueError, match="neither a 7x7 stem"):
        convert_pretrained.convert({"x.weight": torch.zeros(1)}, "resnet", _cfg(FCN, R18))
    with pytest.raises(ValueError, match="--source timm does not fill MODEL.BACKBONE.NAME"):
        convert_pretrained.convert(r18, "timm", _cfg(FCN, R18))
    lraspp = _cfg(f"{SEM_SEG}/lraspp_M-V3-D8_512x1024_320k.yaml")
    with pytest.raises(ValueError, match="--source resnet does not fill .*'build_timm_backbone'"):
        convert_pretrained.convert(r18, "resnet", lraspp)
    with pytest.raises(ValueError, match="--source must be 'timm' or 'resnet', not 'tv'"):
        convert_pretrained.convert(r18, "tv", lraspp)


def test_a_timm_checkpoint_of_another_model_fails_naming_it():
    timm = pytest.importorskip("timm")
    narrower = timm.create_model("mobilenetv3_large_075", pretrained=False).state_dict()
    lraspp = _cfg(f"{SEM_SEG}/lraspp_M-V3-D8_512x1024_320k.yaml")
    with pytest.raises(ValueError, match=r"shape \(\d+\): model.blocks"):
        convert_pretrained.convert(narrower, "timm", lraspp)  # same names, other widths
    hrnet = _cfg(f"{SEM_SEG}/ocrnet_HRNetV2_W18_512x1024_80k.yaml")
    hrnet.defrost()
    hrnet.MODEL.TIMM.NAME = "hrnet_w18_small_v2"
    with pytest.raises(ValueError, match="does not fit MODEL.TIMM.NAME 'hrnet_w18_small_v2'"):
        convert_pretrained.convert(narrower, "timm", hrnet)


def test_a_file_that_is_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "not_weights.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="not_weights.pth: not a state dict"):
        convert_pretrained.load_state_dict(str(path))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, wrapped)
    assert list(convert_pretrained.load_state_dict(str(wrapped))) == ["w"]
