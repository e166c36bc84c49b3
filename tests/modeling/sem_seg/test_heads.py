"""Semantic decode heads (issue 11): dilated ResNetV1c, base head losses, heads, inference
modes, the synthetic semantic split and the quickstart configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_backbone, build_model

from d2seg.config import add_d2seg_config, load_config
from d2seg.data import build_train_mapper
from d2seg.data.datasets.synthetic_sem_seg import panoptic_to_semantic, segment_borders
from d2seg.modeling.meta_arch.semantic_segmentor import sliding_windows
from d2seg.modeling.sem_seg.ann_head import PyramidNonLocal, pyramid_pool
from d2seg.modeling.sem_seg.cc_head import CrissCrossAttention
from d2seg.modeling.sem_seg.da_head import ChannelAttention, PositionAttention
from d2seg.modeling.sem_seg.decode_head import ohem_pixel_weights, sem_seg_loss
from d2seg.modeling.sem_seg.isa_head import SelfAttention as IsaSelfAttention
from d2seg.modeling.sem_seg.isa_head import interlaced_sparse_attention
from d2seg.modeling.sem_seg.ocr_head import ObjectAttention, gather_object_regions
from d2seg.modeling.sem_seg.psa_head import PSABranch, psa_mask
from tests.helpers.modules import one_sgd_step
from tests.helpers.scripts import REPO_ROOT, load_script

QUICKSTARTS = {
    "PSPHead": "configs/quickstart/pspnet_R_18_synthetic.yaml",
    "DepthwiseSeparableASPPHead": "configs/quickstart/deeplabv3plus_R_18_synthetic.yaml",
}
HEADS = [
    "FCNHead",
    "PSPHead",
    "ASPPHead",
    "DepthwiseSeparableASPPHead",
    "DAHead",
    "CCHead",
    "OCRHead",
    "ASPPV2Head",
    "UPerHead",
    "ISAHead",
    "ANNHead",
    "DenseASPPHead",
    "PSAHead",
]
EXTRA_LOSSES = {"DAHead": {"loss_sem_seg_pam", "loss_sem_seg_cam"}}


def test_defaults_are_mmsegmentations():
    cfg = add_d2seg_config(get_cfg())
    sem, test = cfg.MODEL.SEM_SEG_HEAD, cfg.TEST.SEM_SEG
    assert (sem.DROPOUT, sem.ALIGN_CORNERS, sem.IGNORE_VALUE) == (0.1, False, 255)
    assert (sem.AUX_CHANNELS, sem.AUX_LOSS_WEIGHT) == (256, 0.4)
    assert (sem.OHEM, sem.OHEM_THRESH, sem.OHEM_MIN_KEPT) == (False, 0.7, 100000)
    assert (sem.AVG_NON_IGNORE, list(sem.CLASS_WEIGHTS)) == (False, [])
    assert (sem.FCN_NUM_CONVS, sem.FCN_CONCAT_INPUT) == (2, True)
    assert list(sem.PSP_POOL_SCALES) == [1, 2, 3, 6] and sem.C1_CHANNELS == 48
    assert (test.MODE, list(test.CROP_SIZE), list(test.STRIDE)) == ("whole", [769, 769], [513, 513])
    assert (list(test.SCALES), test.FLIP) == ([1.0], False)
    assert (cfg.MODEL.RESNETS.RES4_DILATION, cfg.MODEL.RESNETS.CONTRACT_DILATION) == (1, False)
    assert tuple(cfg.INPUT.SEM_SEG_RATIO_RANGE) == (0.5, 2.0)


# ---------------------------------------------------------------- dilated ResNetV1c backbone


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


# ---------------------------------------------------------------- losses


def _brute_force_ce(logits, targets, ignore, weights=None):
    """Per-pixel -w[y] log softmax(logits)[y] with loops; 0 where ignored."""
    n, k, h, w = logits.shape
    out = torch.zeros(n, h, w, dtype=torch.float64)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                y = int(targets[b, i, j])
                if y == ignore:
                    continue
                z = logits[b, :, i, j].double()
                weight = 1.0 if weights is None else float(weights[y])
                out[b, i, j] = -weight * (z[y] - torch.logsumexp(z, 0))
    return out


def test_cross_entropy_averages_over_all_pixels_as_mmsegmentation():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 4, 5, 6), torch.randint(0, 4, (2, 5, 6))
    targets[0, :2] = 255
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0])
    per_pixel = _brute_force_ce(logits, targets, 255, weights)
    loss = sem_seg_loss(logits, targets, class_weights=weights)
    torch.testing.assert_close(loss.double(), per_pixel.sum() / targets.numel())
    labelled = (targets != 255).sum()
    loss = sem_seg_loss(logits, targets, class_weights=weights, avg_non_ignore=True)
    torch.testing.assert_close(loss.double(), per_pixel.sum() / labelled)


def test_logits_are_resized_bilinearly_to_the_targets():
    logits, targets = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 8, 8))
    for align in (False, True):
        up = F.interpolate(logits, (8, 8), mode="bilinear", align_corners=align)
        expected = _brute_force_ce(up, targets, 255).mean()
        loss = sem_seg_loss(logits, targets, align_corners=align)
        torch.testing.assert_close(loss.double(), expected)


def _brute_force_ohem(probs, targets, ignore, thresh, min_kept):
    valid = [
        (b, i, j)
        for b in range(targets.shape[0])
        for i in range(targets.shape[1])
        for j in range(targets.shape[2])
        if targets[b, i, j] != ignore
    ]
    true_prob = sorted(float(probs[b, targets[b, i, j], i, j]) for b, i, j in valid)
    k = min(min_kept * targets.shape[0], len(true_prob) - 1)
    threshold = max(true_prob[k], thresh)
    weights = torch.zeros(targets.shape)
    for b, i, j in valid:
        weights[b, i, j] = float(probs[b, targets[b, i, j], i, j] < threshold)
    return weights


@pytest.mark.parametrize("thresh", [0.0, 0.7])
@pytest.mark.parametrize("min_kept", [1, 3, 100])
def test_ohem_keeps_pixels_below_the_probability_threshold(min_kept, thresh):
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 3, 4, 5) * 3, torch.randint(0, 3, (2, 4, 5))
    targets[1, 0] = 255
    expected = _brute_force_ohem(logits.softmax(1), targets, 255, thresh, min_kept)
    weights = ohem_pixel_weights(logits, targets, 255, thresh, min_kept)
    torch.testing.assert_close(weights, expected)
    if thresh == 0.0 and min_kept < 10:  # the floor alone: exactly min_kept x N pixels
        assert weights.sum() == 2 * min_kept


def test_ohem_threshold_is_strict_and_min_kept_raises_it():
    # two classes with equal logits: every true-class probability is exactly 0.5
    logits, targets = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    logits[0, 1, 0, 0] = 10.0  # this pixel's true-class prob ~0: the only one below 0.5
    assert ohem_pixel_weights(logits, targets, 255, 0.5, 0).flatten().tolist() == [1, 0, 0, 0]
    # min_kept 2 x 1 image: threshold = 2nd-smallest prob (0.5) -> still only the hard pixel,
    # since the comparison is strict; thresh 0.6 keeps all
    assert ohem_pixel_weights(logits, targets, 255, 0.5, 2).sum() == 1
    assert ohem_pixel_weights(logits, targets, 255, 0.6, 0).sum() == 4


def test_ohem_by_loss_keeps_the_hardest_pixels():
    torch.manual_seed(2)
    logits, targets = torch.randn(1, 3, 3, 3), torch.randint(0, 3, (1, 3, 3))
    targets[0, 0, 0] = 255
    weights = ohem_pixel_weights(logits, targets, 255, None, 4)
    losses = _brute_force_ce(logits, targets, 255)
    hardest = losses.flatten().argsort(descending=True)[:4]
    expected = torch.zeros(9)
    expected[hardest] = 1
    assert weights.flatten().tolist() == expected.tolist()
    loss = sem_seg_loss(logits, targets, ohem_thresh=None, ohem_min_kept=4)
    torch.testing.assert_close(loss.double(), (losses.flatten() * expected).sum() / 9)


# ---------------------------------------------------------------- heads


def _head_cfg(name, in_channels=2048, num_classes=19):
    cfg = add_d2seg_config(get_cfg())
    sem = cfg.MODEL.SEM_SEG_HEAD
    sem.NAME, sem.NUM_CLASSES, sem.CONVS_DIM, sem.NORM = name, num_classes, 512, "BN"
    sem.IN_FEATURES, sem.AUX_IN_FEATURE, sem.ASPP_DILATIONS = ["res5"], "res4", [12, 24, 36]
    if name == "UPerHead":  # every level, finest first
        sem.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    if name == "ANNHead":  # [low, high]
        sem.IN_FEATURES = ["res4", "res5"]
    shapes = {
        "res2": ShapeSpec(channels=in_channels // 8, stride=4),
        "res3": ShapeSpec(channels=in_channels // 4, stride=8),
        "res4": ShapeSpec(channels=in_channels // 2, stride=8),
        "res5": ShapeSpec(channels=in_channels, stride=8),
    }
    return cfg, shapes


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 2 * c


def sep(c_in, c_out):  # depthwise 3x3 + BN + pointwise 1x1 + BN
    return conv(3, 1, c_in) + bn(c_in) + conv(1, c_in, c_out) + bn(c_out)


# MMSegmentation R-50-D8 Cityscapes heads (in 2048, channels 512, 19 classes), written out
# layer by layer; every head also has the auxiliary FCN head on res4 and a 1x1 classifier.
CLS, AUX = conv(1, 512, 19, bias=True), conv(3, 1024, 256) + bn(256) + conv(1, 256, 19, True)
LAYER_PARAMS = {
    "FCNHead": [
        conv(3, 2048, 512) + bn(512),
        conv(3, 512, 512) + bn(512),
        conv(3, 2048 + 512, 512) + bn(512),
    ],
    "PSPHead": [conv(1, 2048, 512) + bn(512)] * 4 + [conv(3, 2048 + 4 * 512, 512) + bn(512)],
    # Detectron2's ASPP: 1x1, three 3x3 atrous, image pooling (1x1 conv with bias, no BN),
    # then MMSegmentation's 3x3 bottleneck over the 5 branches
    "ASPPHead": [conv(1, 2048, 512) + bn(512)]
    + [conv(3, 2048, 512) + bn(512)] * 3
    + [conv(1, 2048, 512, bias=True), conv(3, 5 * 512, 512) + bn(512)],
    "DepthwiseSeparableASPPHead": [conv(1, 2048, 512) + bn(512)]
    + [sep(2048, 512)] * 3
    + [
        conv(1, 2048, 512, bias=True),
        conv(3, 5 * 512, 512) + bn(512),
        conv(1, 256, 48) + bn(48),
        sep(512 + 48, 512),
        sep(512, 512),
    ],
    # two branches of 3x3 conv, attention, 3x3 conv, each with its own classifier; position
    # attention: 1x1 query / key to 64 and value to 512 (with biases) and gamma
    "DAHead": [conv(3, 2048, 512) + bn(512), conv(3, 512, 512) + bn(512)] * 2
    + [2 * conv(1, 512, 64, True) + conv(1, 512, 512, True) + 1, 1, 2 * CLS],
    # the FCN head's three convs plus criss-cross attention (query / key to 512 / 8, value, gamma)
    "CCHead": [
        conv(3, 2048, 512) + bn(512),
        conv(3, 512, 512) + bn(512),
        conv(3, 2048 + 512, 512) + bn(512),
        2 * conv(1, 512, 64, True) + conv(1, 512, 512, True) + 1,
    ],
    # DeepLab v2: four 3x3 atrous convs (rates 6 / 12 / 18 / 24) to the 19 classes, summed
    "ASPPV2Head": [conv(3, 2048, 19, bias=True)] * 4,
    # UPerNet: PPM (as PSPNet) on res5, 1x1 laterals of res2..res4 to 512, a 3x3 conv per FPN
    # level, 3x3 fusion of the 4 levels
    "UPerHead": [conv(1, 2048, 512) + bn(512)] * 4
    + [conv(3, 2048 + 4 * 512, 512) + bn(512)]
    + [conv(1, c, 512) + bn(512) for c in (256, 512, 1024)]
    + [conv(3, 512, 512) + bn(512)] * 3
    + [conv(3, 4 * 512, 512) + bn(512)],
    # ISANet: 3x3 in-conv; long- and short-range attention each with queries / keys two 1x1
    # conv-BN to 256, a 1x1 value conv (bias) and a 1x1 conv-BN output; 1x1 fusion
    "ISAHead": [conv(3, 2048, 512) + bn(512)]
    + [
        2 * (conv(1, 512, 256) + bn(256) + conv(1, 256, 256) + bn(256))
        + conv(1, 512, 512, True)
        + conv(1, 512, 512)
        + bn(512)
    ]
    * 2
    + [conv(1, 1024, 512) + bn(512)],
    # ANN: AFNB (query 1x1 conv-BN 2048 -> 256, key 1024 -> 256, value conv 1024 -> 256, out
    # conv 256 -> 2048, 1x1 conv-BN fusion 4096 -> 2048), 3x3 conv-BN to 512, APNB (one shared
    # query / key conv-BN, value and out convs, 1x1 conv-BN fusion 1024 -> 512)
    "ANNHead": [
        conv(1, 2048, 256) + bn(256) + conv(1, 1024, 256) + bn(256),
        conv(1, 1024, 256, True) + conv(1, 256, 2048, True),
        conv(1, 4096, 2048) + bn(2048),
        conv(3, 2048, 512) + bn(512),
        conv(1, 512, 256) + bn(256) + conv(1, 512, 256, True) + conv(1, 256, 512, True),
        conv(1, 1024, 512) + bn(512),
    ],
    # DenseASPP: per rate 3/6/12/18/24 [BN] 1x1 to 512, BN, 3x3 to 128 on the input and every
    # earlier output (no leading BN on the first); its classifier reads 2048 + 5 x 128 channels
    "DenseASPPHead": [
        (bn(2048 + 128 * i) if i else 0)
        + conv(1, 2048 + 128 * i, 512)
        + bn(512)
        + conv(3, 512, 128)
        for i in range(5)
    ]
    + [conv(1, 2048 + 5 * 128, 19, bias=True)],
    # PSANet: per branch (collect, distribute) 1x1 conv-BN reduce to 512, 1x1 conv-BN and a 1x1
    # conv (no bias) to the 97 x 97 mask; 1x1 conv-BN projection 1024 -> 2048, 3x3 conv-BN fusion
    "PSAHead": [conv(1, 2048, 512) + bn(512) + conv(1, 512, 512) + bn(512) + conv(1, 512, 97 * 97)]
    * 2
    + [conv(1, 1024, 2048) + bn(2048), conv(3, 4096, 512) + bn(512)],
    # 3x3 bottleneck; queries and keys two 1x1 conv-BN to 256, value one, out back to 512;
    # 1x1 fusion of [context, feature]; the region map is the auxiliary head's
    "OCRHead": [
        conv(3, 2048, 512) + bn(512),
        2 * (conv(1, 512, 256) + bn(256) + conv(1, 256, 256) + bn(256)),
        conv(1, 512, 256) + bn(256),
        conv(1, 256, 512) + bn(512),
        conv(1, 1024, 512) + bn(512),
    ],
}


@pytest.mark.parametrize("name", HEADS)
def test_parameter_count_equals_the_layer_list(name):
    cfg, shapes = _head_cfg(name)
    head = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, shapes)
    classifier = CLS if head.has_classifier else 0
    assert sum(p.numel() for p in head.parameters()) == sum(LAYER_PARAMS[name]) + classifier + AUX
    if head.has_classifier:
        dropout = head.classifier.dropout
        assert isinstance(dropout, torch.nn.Dropout2d) and dropout.p == 0.1


@pytest.mark.parametrize("name", HEADS)
def test_one_step_lowers_the_loss_and_outputs_are_at_input_resolution(name):
    torch.manual_seed(0)
    cfg, shapes = _head_cfg(name, in_channels=64, num_classes=5)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.AUX_CHANNELS = 16, 8
    cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 0.0  # a deterministic before / after comparison
    head = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, shapes)
    features = {
        "res2": torch.randn(2, 8, 16, 24),
        "res3": torch.randn(2, 16, 8, 12),
        "res4": torch.randn(2, 32, 8, 12),
        "res5": torch.randn(2, 64, 8, 12),
    }
    targets = torch.randint(0, 5, (2, 64, 96))
    targets[:, :4] = 255
    aux_logits = head.aux_head(features["res4"])  # before the step
    expected_aux = 0.4 * sem_seg_loss(aux_logits, targets)
    losses = one_sgd_step(head, features, targets)
    before = losses["before"]
    assert set(before) == {"loss_sem_seg", "loss_sem_seg_aux"} | EXTRA_LOSSES.get(name, set())
    torch.testing.assert_close(before["loss_sem_seg_aux"], expected_aux)
    assert sum(losses["after"].values()) < sum(before.values())
    logits, _ = head.eval()(features)
    assert logits.shape == (2, 5, 64, 96)


def _tiny_model_cfg(head="PSPHead", opts=()):
    return load_config(
        str(REPO_ROOT / QUICKSTARTS["PSPHead"]),
        [
            "MODEL.SEM_SEG_HEAD.NAME",
            head,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "16",
            "MODEL.SEM_SEG_HEAD.AUX_CHANNELS",
            "8",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "16",
            *opts,
        ],
    )


@pytest.mark.parametrize("meta_arch", ["SemanticSegmentor", "D2SegSemanticSegmentor"])
def test_models_output_class_maps_at_the_requested_resolution(meta_arch):
    model = build_model(_tiny_model_cfg(opts=["MODEL.META_ARCHITECTURE", meta_arch])).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 70, 90) * 255, "height": 35, "width": 45}])
    assert outputs[0]["sem_seg"].shape == (6, 35, 45)


# ---------------------------------------------------------------- attention vs direct formulas


def _flat(x):
    """(C, H, W) -> (H W, C): one row per position, raster order."""
    return x.flatten(1).T


def test_position_attention_is_softmax_qkt_v():
    torch.manual_seed(0)
    module = PositionAttention(6, 3)
    torch.nn.init.constant_(module.gamma, 0.7)
    x = torch.randn(2, 6, 3, 4)
    for n in range(2):
        q, k, v = (_flat(proj(x)[n]) for proj in (module.query, module.key, module.value))
        expected = 0.7 * torch.softmax(q @ k.T, dim=1) @ v + _flat(x[n])
        torch.testing.assert_close(_flat(module(x)[n]), expected)


def test_channel_attention_is_softmax_of_max_minus_energy_times_x():
    torch.manual_seed(0)
    module = ChannelAttention()
    torch.nn.init.constant_(module.gamma, 0.3)
    x = torch.randn(2, 5, 3, 4)
    for n in range(2):
        flat = x[n].reshape(5, -1)
        energy = flat @ flat.T
        attention = torch.softmax(energy.max(dim=1, keepdim=True).values - energy, dim=1)
        expected = 0.3 * attention @ flat + flat
        torch.testing.assert_close(module(x)[n].reshape(5, -1), expected)


def test_criss_cross_attention_is_dense_attention_on_the_row_and_column_mask():
    torch.manual_seed(0)
    module = CrissCrossAttention(16)
    torch.nn.init.constant_(module.gamma, 0.5)
    h, w = 4, 5
    x = torch.randn(2, 16, h, w)
    rows, cols = torch.arange(h * w) // w, torch.arange(h * w) % w
    mask = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
    assert mask.sum(1).tolist() == [h + w - 1] * (h * w)  # itself counted once
    for n in range(2):
        q, k, v = (_flat(proj(x)[n]) for proj in (module.query, module.key, module.value))
        energy = (q @ k.T).masked_fill(~mask, float("-inf"))
        expected = 0.5 * torch.softmax(energy, dim=1) @ v + _flat(x[n])
        torch.testing.assert_close(_flat(module(x)[n]), expected)


def test_danet_has_three_equally_weighted_losses():
    """Paper sec. 3.4: the fused output and each attention branch get their own loss."""
    torch.manual_seed(0)
    cfg, shapes = _head_cfg("DAHead", in_channels=32, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 16, 0.0
    cfg.MODEL.SEM_SEG_HEAD.AUX_IN_FEATURE = ""
    head = SEM_SEG_HEADS_REGISTRY.get("DAHead")(cfg, shapes)
    features, targets = {"res5": torch.randn(2, 32, 4, 4)}, torch.randint(0, 3, (2, 32, 32))
    losses = head(features, targets)[1]
    branches = head.branch_outputs(features)
    expected = {
        "loss_sem_seg": sem_seg_loss(head.classifier(branches["pam"] + branches["cam"]), targets),
        **{
            f"loss_sem_seg_{b}": sem_seg_loss(head.branch_classifiers[b](branches[b]), targets)
            for b in ("pam", "cam")
        },
    }
    assert losses.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value)


def test_ocr_object_regions_and_attention_follow_the_paper_equations():
    """Eq. 2: f_k = sum_i softmax_i(m_ki) x_i; eq. 3: y_i = sum_k softmax_k(q_i . k_k / sqrt(d))
    v_k, projected back; eq. 4: fused with x_i."""
    torch.manual_seed(0)
    x, regions = torch.randn(2, 8, 3, 4), torch.randn(2, 5, 3, 4)
    objects = gather_object_regions(x, regions)
    for n in range(2):
        for k in range(5):
            weights = torch.softmax(regions[n, k].flatten(), dim=0)
            expected = sum(weights[i] * x[n, :, i // 4, i % 4] for i in range(12))
            torch.testing.assert_close(objects[n, :, k], expected)
    block = ObjectAttention(8, 4, "").eval()
    out = block(x, objects)
    for n in range(2):
        q = _flat(block.query(x)[n])
        k = block.key(objects[n][None, :, :, None])[0, :, :, 0].T
        v = block.value(objects[n][None, :, :, None])[0, :, :, 0].T
        context = torch.softmax(q @ k.T / 2.0, dim=1) @ v  # sqrt(d) = sqrt(4)
        context = block.out(context.T.reshape(1, 4, 3, 4))
        expected = block.fuse(torch.cat([context, x[n : n + 1]], dim=1))
        torch.testing.assert_close(out[n : n + 1], expected)
    cfg, shapes = _head_cfg("OCRHead", in_channels=32, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.AUX_IN_FEATURE = ""
    with pytest.raises(ValueError, match="AUX_IN_FEATURE"):
        SEM_SEG_HEADS_REGISTRY.get("OCRHead")(cfg, shapes)


def test_deeplab_v2_sums_four_atrous_branches_to_class_logits():
    cfg, shapes = _head_cfg("ASPPV2Head", in_channels=8, num_classes=3)
    head = SEM_SEG_HEADS_REGISTRY.get("ASPPV2Head")(cfg, shapes).eval()
    assert [b.dilation[0] for b in head.branches] == [6, 12, 18, 24]
    x = torch.randn(1, 8, 30, 30)
    expected = sum(
        F.conv2d(x, b.weight, b.bias, padding=r, dilation=r)
        for b, r in zip(head.branches, (6, 12, 18, 24))
    )
    torch.testing.assert_close(head.predict({"res5": x}), expected)


def test_upernet_is_ppm_plus_a_top_down_fpn_fused_at_the_finest_level():
    torch.manual_seed(0)
    cfg, shapes = _head_cfg("UPerHead", in_channels=64, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 8
    head = SEM_SEG_HEADS_REGISTRY.get("UPerHead")(cfg, shapes).eval()
    c2, c3, c4, c5 = (torch.randn(1, c, s, s) for c, s in ((8, 16), (16, 8), (32, 4), (64, 2)))

    def up(x, side):
        return F.interpolate(x, (side, side), mode="bilinear", align_corners=False)

    with torch.no_grad():
        p5 = head.ppm_bottleneck(torch.cat([c5, *[up(s(c5), 2) for s in head.ppm.stages]], 1))
        p4 = head.lateral_convs[2](c4) + up(p5, 4)
        p3 = head.lateral_convs[1](c3) + up(p4, 8)
        p2 = head.lateral_convs[0](c2) + up(p3, 16)
        levels = [
            head.fpn_convs[0](p2),
            up(head.fpn_convs[1](p3), 16),
            up(head.fpn_convs[2](p4), 16),
            up(p5, 16),
        ]
        expected = head.fpn_bottleneck(torch.cat(levels, dim=1))
        features = {"res2": c2, "res3": c3, "res4": c4, "res5": c5}
        torch.testing.assert_close(head.layers(features), expected)


def _map_mean(x):
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


def test_isa_long_range_groups_interlaced_pixels_and_short_range_groups_blocks():
    """With each step replaced by "every pixel becomes its group's mean": the long-range groups
    are the pixels with the same offset (row % 4, col % 4) in the 4 x 4 blocks, the short-range
    groups the blocks (row // 4, col // 4)."""
    x = torch.randn(2, 3, 8, 12)
    y = interlaced_sparse_attention(x, _map_mean, lambda t: t, (4, 4))
    z = interlaced_sparse_attention(x, _map_mean, _map_mean, (4, 4))
    long, expected = torch.zeros_like(x), torch.zeros_like(x)
    for r in range(8):
        for c in range(12):
            long[..., r, c] = x[..., r % 4 :: 4, c % 4 :: 4].mean(dim=(-2, -1))
    for r in range(8):
        for c in range(12):
            block = long[..., r // 4 * 4 : r // 4 * 4 + 4, c // 4 * 4 : c // 4 * 4 + 4]
            expected[..., r, c] = block.mean(dim=(-2, -1))
    torch.testing.assert_close(y, long)
    torch.testing.assert_close(z, expected)
    odd = torch.randn(1, 2, 10, 7)  # padded to 12 x 8, then cropped back
    torch.testing.assert_close(
        interlaced_sparse_attention(odd, _map_mean, _map_mean, (4, 4)).shape, odd.shape
    )
    identity = interlaced_sparse_attention(odd, lambda t: t, lambda t: t, (4, 4))
    torch.testing.assert_close(identity, odd)


def test_isa_self_attention_is_scaled_softmax_qkt_v_then_out_conv():
    torch.manual_seed(0)
    block = IsaSelfAttention(6, 4, "").eval()
    x = torch.randn(2, 6, 3, 3)
    with torch.no_grad():
        for n in range(2):
            q, k, v = (_flat(proj(x)[n]) for proj in (block.query, block.key, block.value))
            context = torch.softmax(q @ k.T / 2.0, dim=1) @ v  # sqrt(4)
            expected = block.out(context.T.reshape(1, 6, 3, 3))
            torch.testing.assert_close(block(x)[n : n + 1], expected)


def test_ann_attends_to_110_pyramid_pooled_positions():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    pooled = pyramid_pool(x, [1, 3, 6, 8])
    assert pooled.shape == (2, 3, 1 + 9 + 36 + 64)
    torch.testing.assert_close(pooled[..., 0], x.mean(dim=(2, 3)))  # the 1 x 1 bin
    torch.testing.assert_close(pooled[..., 1 + 9 + 36], x[..., :2, :2].mean(dim=(2, 3)))  # 8x8
    block = PyramidNonLocal(6, 4, 8, 5, [1, 2], "", shared=False).eval()
    high, low = torch.randn(1, 6, 4, 4), torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        q = _flat(block.query(high)[0])
        keys, values = block.key(low), block.value(low)
        k = torch.cat(
            [keys.mean(dim=(2, 3))]
            + [
                keys[0, :, i : i + 2, j : j + 2].mean(dim=(1, 2))[None]
                for i in (0, 2)
                for j in (0, 2)
            ]
        )
        v = torch.cat(
            [values.mean(dim=(2, 3))]
            + [
                values[0, :, i : i + 2, j : j + 2].mean(dim=(1, 2))[None]
                for i in (0, 2)
                for j in (0, 2)
            ]
        )
        context = torch.softmax(q @ k.T / 8**0.5, dim=1) @ v
        expected = block.out(context.T.reshape(1, 8, 4, 4))
        torch.testing.assert_close(block(high, low), expected)
    shared = PyramidNonLocal(6, 6, 8, 6, [1], "", shared=True)
    assert shared.query is shared.key
    cfg, shapes = _head_cfg("ANNHead", in_channels=32, num_classes=3)
    head = SEM_SEG_HEADS_REGISTRY.get("ANNHead")(cfg, shapes)
    # AFNB's fusion is conv-BN without ReLU (MMSeg act_cfg=None), APNB's conv-BN-ReLU
    assert head.afnb_fuse.activation is None and head.apnb_fuse.activation is not None


def test_dense_aspp_layers_read_the_input_and_every_earlier_output():
    cfg, shapes = _head_cfg("DenseASPPHead", in_channels=16, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.DENSE_ASPP_GROWTH = 8, 4
    head = SEM_SEG_HEADS_REGISTRY.get("DenseASPPHead")(cfg, shapes).eval()
    rates = [layer[-2].dilation[0] for layer in head.dense_layers]
    assert rates == [3, 6, 12, 18, 24]
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        outputs = []
        for layer in head.dense_layers:
            outputs.append(layer(torch.cat([x, *outputs], dim=1)))
        expected = torch.cat([x, *outputs], dim=1)
        torch.testing.assert_close(head.layers({"res5": x}), expected)
    assert expected.shape[1] == 16 + 5 * 4


@pytest.mark.parametrize("mode", ["collect", "distribute"])
def test_psa_mask_matches_a_per_position_loop(mode):
    torch.manual_seed(0)
    h, w, mh, mw = 3, 4, 5, 7
    masks = torch.randn(2, mh * mw, h, w)
    expected = torch.zeros(2, h * w, h * w)
    for ph in range(h):
        for pw in range(w):
            for my in range(mh):
                for mx in range(mw):
                    qh, qw = ph + my - (mh - 1) // 2, pw + mx - (mw - 1) // 2
                    if 0 <= qh < h and 0 <= qw < w:
                        q, p = qh * w + qw, ph * w + pw
                        target = (q, p) if mode == "collect" else (p, q)
                        expected[:, target[0], target[1]] = masks[:, my * mw + mx, ph, pw]
    out = psa_mask(masks, (mh, mw), mode)
    torch.testing.assert_close(out.view(2, h * w, h * w), expected)


def test_psa_branch_attends_with_the_softmaxed_mask():
    torch.manual_seed(0)
    branch = PSABranch(6, 4, (5, 5), "", "distribute").eval()
    x = torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        reduced = branch.reduce(x)
        weights = psa_mask(branch.attention(reduced), (5, 5), "distribute").view(1, 16, 16)
        expected = (reduced.view(1, 4, 16) @ weights.softmax(dim=1)).view(1, 4, 4, 4)
        torch.testing.assert_close(branch(x, (4, 4), False), expected)
    cfg, shapes = _head_cfg("PSAHead", in_channels=8, num_classes=3)
    head = SEM_SEG_HEADS_REGISTRY.get("PSAHead")(cfg, shapes)
    assert head.shrunk_size(64, 128) == ((32, 64), False)
    assert head.shrunk_size(65, 129) == ((33, 65), True)


def test_ccnet_applies_criss_cross_attention_twice():
    cfg, shapes = _head_cfg("CCHead", in_channels=32, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
    head = SEM_SEG_HEADS_REGISTRY.get("CCHead")(cfg, shapes).eval()
    calls = []
    head.cca.register_forward_hook(lambda *args: calls.append(1))
    head({"res5": torch.randn(1, 32, 4, 4)})
    assert len(calls) == 2


# ---------------------------------------------------------------- inference modes


def test_sliding_windows_follow_mmsegmentation():
    # Cityscapes 1024 x 2048, crop 769, stride 513: 2 rows x 4 columns, the last ones shifted
    windows = sliding_windows(1024, 2048, (769, 769), (513, 513))
    assert sorted({(y1, y2) for y1, y2, _, _ in windows}) == [(0, 769), (255, 1024)]
    assert sorted({(x1, x2) for _, _, x1, x2 in windows}) == [
        (0, 769),
        (513, 1282),
        (1026, 1795),
        (1279, 2048),
    ]
    assert sliding_windows(50, 60, (64, 64), (32, 32)) == [(0, 50, 0, 60)]


def _model(opts=()):
    torch.manual_seed(0)
    model = build_model(_tiny_model_cfg(opts=opts)).eval()
    for module in model.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_slide_equals_whole_when_the_window_covers_the_image():
    image = torch.randn(1, 3, 64, 96)
    whole = _model(["TEST.SEM_SEG.MODE", "whole"])
    slide = _model(["TEST.SEM_SEG.MODE", "slide", "TEST.SEM_SEG.CROP_SIZE", "[64, 96]"])
    with torch.no_grad():
        torch.testing.assert_close(slide.inference(image), whole.inference(image))


def test_slide_averages_the_logits_of_overlapping_windows():
    image = torch.randn(1, 3, 64, 96)
    model = _model(
        [
            "TEST.SEM_SEG.MODE",
            "slide",
            "TEST.SEM_SEG.CROP_SIZE",
            "[64, 64]",
            "TEST.SEM_SEG.STRIDE",
            "[32, 32]",
        ]
    )
    with torch.no_grad():
        left, right = model.whole(image[..., :64]), model.whole(image[..., 32:])
        expected = torch.cat(
            [left[..., :32], (left[..., 32:] + right[..., :32]) / 2, right[..., 32:]], dim=-1
        )
        torch.testing.assert_close(model.slide(image), expected)


def test_flip_tta_on_a_symmetric_input_is_symmetric_and_averages_probabilities():
    half = torch.randn(1, 3, 64, 48)
    image = torch.cat([half, half.flip(-1)], dim=-1)
    model = _model(["TEST.SEM_SEG.FLIP", "True", "TEST.SEM_SEG.SCALES", "[0.75, 1.0]"])
    with torch.no_grad():
        probs = model.inference(image)
        torch.testing.assert_close(probs, probs.flip(-1))
        plain = _model()
        expected = torch.zeros_like(probs)
        for scale in (0.75, 1.0):
            x = F.interpolate(image, scale_factor=scale, mode="bilinear") if scale != 1 else image
            for flip in (False, True):
                logits = plain.whole(x.flip(-1) if flip else x)
                logits = logits.flip(-1) if flip else logits
                expected += F.interpolate(logits, (64, 96), mode="bilinear").softmax(1) / 4
        torch.testing.assert_close(probs, expected)


def test_bad_inference_settings_are_named():
    with pytest.raises(ValueError, match="TEST.SEM_SEG.MODE 'tiles'"):
        _model(["TEST.SEM_SEG.MODE", "tiles"])


# ---------------------------------------------------------------- synthetic semantic split


def test_segment_borders_match_a_neighbour_loop():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(7, 9))
    expected = np.zeros_like(ids, bool)
    for i in range(7):
        for j in range(9):
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= i + di < 7 and 0 <= j + dj < 9 and ids[i + di, j + dj] != ids[i, j]:
                    expected[i, j] = True
    assert (segment_borders(ids) == expected).all()


def test_every_thing_and_stuff_class_is_labelled_with_255_on_borders():
    ids = np.zeros((6, 6), np.int32)
    ids[:, :3], ids[:, 3:], ids[2:4, 1:2] = 1, 2, 3  # sky | grass, a circle inside the sky
    segments = [
        {"id": 1, "category_id": 4},
        {"id": 2, "category_id": 5},
        {"id": 3, "category_id": 1},
    ]
    labels = panoptic_to_semantic(ids, segments)
    assert labels[0, 0] == 3 and labels[0, 5] == 4  # sky, grass (contiguous order 0..5)
    assert labels[2, 1] == 255 and labels[:, 2].tolist() == [255] * 6  # borders
    assert labels[3, 1] == 255 and (labels == 0).sum() == 0  # the 2-px circle is all border
    labels = panoptic_to_semantic(np.full((2, 2), 7), [{"id": 7, "category_id": 1}])
    assert labels.tolist() == [[0, 0], [0, 0]]  # a thing (circle) is class 0


def test_synthetic_sem_seg_split_is_registered_for_the_sem_seg_evaluator(synthetic_root):
    meta = MetadataCatalog.get("d2seg_synthetic_sem_seg_val")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.stuff_classes == ["circle", "triangle", "square", "sky", "grass", "sand"]
    records = DatasetCatalog.get("d2seg_synthetic_sem_seg_val")
    assert len(records) == 48
    from PIL import Image

    labels = np.asarray(Image.open(records[0]["sem_seg_file_name"]))
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5, 255} and (labels == 255).any()
    assert Image.open(records[0]["file_name"]).size == labels.shape[::-1]


def test_training_mapper_crops_with_the_category_area_constraint(synthetic_root):
    cfg = _tiny_model_cfg(opts=["INPUT.PHOTOMETRIC_DISTORTION", "True"])
    augs = [type(a).__name__ for a in build_train_mapper(cfg).augmentations.augs]
    assert augs[:3] == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "RandomFlip"]
    assert augs[3:] == ["RandomApply"] * 3
    cfg = _tiny_model_cfg(opts=["INPUT.SEM_SEG_SCALE", "(2048, 1024)"])
    assert type(build_train_mapper(cfg).augmentations.augs[0]).__name__ == "ResizeScale"


# ---------------------------------------------------------------- quickstart through train_net


@pytest.mark.parametrize("head", sorted(QUICKSTARTS))
def test_quickstart_trains_and_reports_miou(head, synthetic_root, tmp_path):
    """A few iterations of tools/train_net.py's trainer on the quickstart config, shrunk; the
    final evaluation reports mIoU (the real figures: README, "Semantic segmentation")."""
    cfg = load_config(
        str(REPO_ROOT / QUICKSTARTS[head]),
        [
            "OUTPUT_DIR",
            str(tmp_path),
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "16",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "16",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.CROP.SIZE",
            "(64, 64)",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "96",
        ],
    )
    trainer = load_script("tools/train_net.py").Trainer(cfg)
    trainer.train()
    latest = trainer.storage.latest()
    assert "sem_seg/mIoU" in latest and 0 <= latest["sem_seg/mIoU"][0] <= 100
