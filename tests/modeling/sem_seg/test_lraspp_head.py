"""LR-ASPP (MMSegmentation's `LRASPPHead`, MobileNetV3 paper sec. 6.4) and the HRNetV2 OCRNet
cascade: layer lists written out, the forward recomputed with plain tensor operations, one
training step, and the configs' MMSegmentation constants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_backbone

from d2seg.config import add_d2seg_config, load_config
from tests.helpers.configs import CONFIG_ROOT, CPU
from tests.helpers.modules import one_sgd_step, randomize_bn_statistics

LRASPP_CONFIG = "Cityscapes-SemanticSegmentation/lraspp_M-V3-D8_512x1024_320k.yaml"
FEATURES = ["res1", "res2", "res5"]


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 2 * c


def _head(in_channels=(16, 24, 960), channels=128, num_classes=19, strides=(2, 4, 8), **sem):
    cfg = add_d2seg_config(get_cfg())
    s = cfg.MODEL.SEM_SEG_HEAD
    s.NAME, s.IN_FEATURES, s.AUX, s.NORM = "LRASPPHead", FEATURES, [], "BN"
    s.CONVS_DIM, s.NUM_CLASSES = channels, num_classes
    for key, value in sem.items():  # the head's own keys, else the shared ones
        setattr(s.LRASPP if key in s.LRASPP else s, key, value)
    shapes = {
        f: ShapeSpec(channels=c, stride=st) for f, c, st in zip(FEATURES, in_channels, strides)
    }
    return SEM_SEG_HEADS_REGISTRY.get("LRASPPHead")(cfg, shapes)


def test_lraspp_parameter_count_equals_mmsegmentations_layer_list():
    """lraspp_m-v3-d8: in (16, 24, 960), branch_channels (32, 64), channels 128, 19 classes."""
    layers = [
        conv(1, 960, 128) + bn(128),  # aspp_conv (ConvModule, no bias)
        conv(1, 960, 128),  # image_pool conv: no bias, no norm, sigmoid
        conv(1, 128, 128, bias=True),  # conv_up_input (plain nn.Conv2d)
        conv(1, 16, 32) + conv(1, 24, 64),  # branch convs (bias=False, no norm)
        conv(1, 128 + 32, 128) + bn(128) + conv(1, 128 + 64, 128) + bn(128),  # conv_ups
        conv(1, 128, 19, bias=True),  # conv_seg
    ]
    head = _head()
    assert sum(p.numel() for p in head.parameters()) == sum(layers)
    assert isinstance(head.classifier.dropout, torch.nn.Dropout2d)
    assert head.classifier.dropout.p == 0.1
    assert len(head.aux_heads) == 0


def _plain_lraspp(head, features):
    """The LR-ASPP forward with plain tensor operations and the head's weights; the average
    pool is an explicit loop over 49 x 49 windows every 16 rows / 20 columns (no padding)."""

    def conv_bn_relu(module, x):
        y = F.conv2d(x, module.weight)
        n = module.norm
        y = (y - n.running_mean[:, None, None]) / torch.sqrt(n.running_var[:, None, None] + n.eps)
        return torch.relu(y * n.weight[:, None, None] + n.bias[:, None, None])

    low1, low2, top = (features[f] for f in FEATURES)
    rows = range(0, top.shape[2] - 49 + 1, 16)
    cols = range(0, top.shape[3] - 49 + 1, 20)
    pooled = torch.stack(
        [
            torch.stack([top[:, :, r : r + 49, c : c + 49].mean((2, 3)) for c in cols], -1)
            for r in rows
        ],
        -2,
    )
    gate = torch.sigmoid(F.conv2d(pooled, head.pool_conv.weight))
    gate = F.interpolate(gate, size=top.shape[-2:], mode="bilinear", align_corners=True)
    x = conv_bn_relu(head.aspp_conv, top) * gate
    x = F.conv2d(x, head.conv_up_input.weight, head.conv_up_input.bias)
    for low, branch, fuse in reversed(list(zip((low1, low2), head.branch_convs, head.fuse_convs))):
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = conv_bn_relu(fuse, torch.cat([x, F.conv2d(low, branch.weight)], dim=1))
    return x, pooled.shape[-2:]


def test_lraspp_forward_equals_the_plain_computation():
    """Deepest map 50 x 70 (a 400 x 560 image at output stride 8): the 49 x 49 pool with
    stride (16, 20) gives 1 x 2 cells; the 50th row and 70th column start no window."""
    torch.manual_seed(0)
    head = _head(in_channels=(4, 6, 8), channels=8, num_classes=3).eval()
    randomize_bn_statistics(head)
    features = {
        "res1": torch.randn(1, 4, 200, 280),
        "res2": torch.randn(1, 6, 100, 140),
        "res5": torch.randn(1, 8, 50, 70),
    }
    with torch.no_grad():
        expected, cells = _plain_lraspp(head, features)
        ours = head.layers(features)
    assert tuple(cells) == (1, 2)
    torch.testing.assert_close(ours, expected)


def test_lraspp_pool_window_shrinks_to_a_smaller_map():
    """Below 49 x 49 (MMSegmentation raises there) the window is the whole map: a global mean."""
    head = _head(in_channels=(4, 6, 8), channels=8, num_classes=3).eval()
    top = torch.randn(1, 8, 12, 30)
    gate = head.image_pool(top)
    pooled = top.mean((2, 3), keepdim=True)
    expected = torch.sigmoid(F.conv2d(pooled, head.pool_conv.weight)).expand_as(gate)
    torch.testing.assert_close(gate, expected)


def test_lraspp_one_step_lowers_the_loss_and_logits_come_at_input_resolution():
    torch.manual_seed(0)
    head = _head(in_channels=(4, 6, 8), channels=8, num_classes=5, DROPOUT=0.0)
    features = {
        "res1": torch.randn(2, 4, 32, 48),
        "res2": torch.randn(2, 6, 16, 24),
        "res5": torch.randn(2, 8, 8, 12),
    }
    targets = torch.randint(0, 5, (2, 64, 96))
    targets[:, :4] = 255
    losses = one_sgd_step(head, features, targets)
    assert set(losses["before"]) == {"loss_sem_seg"}
    assert losses["after"]["loss_sem_seg"] < losses["before"]["loss_sem_seg"]
    logits, _ = head.eval()(features)
    assert logits.shape == (2, 5, 64, 96)  # stride-2 logits resized to the input


def test_lraspp_needs_one_branch_width_per_lower_feature():
    with pytest.raises(ValueError, match=r"LRASPP.BRANCH_CHANNELS \[32\] needs one width"):
        _head(BRANCH_CHANNELS=[32])


def test_lraspp_config_is_mmsegmentations_mobilenet_v3_d8():
    """Head on MobileNetV3-Large's 16-ch stride-2, 24-ch stride-4 and 960-ch stride-8 maps
    (MMSeg out_indices (1, 3, 16) of its D8 MobileNetV3), 128 channels, no auxiliary head."""
    pytest.importorskip("timm")
    cfg = load_config(str(CONFIG_ROOT / LRASPP_CONFIG), CPU)
    sem = cfg.MODEL.SEM_SEG_HEAD
    assert (sem.NAME, sem.CONVS_DIM, list(sem.AUX), sem.DROPOUT) == ("LRASPPHead", 128, [], 0.1)
    assert list(sem.LRASPP.BRANCH_CHANNELS) == [32, 64]
    assert (list(sem.LRASPP.POOL_KERNEL), list(sem.LRASPP.POOL_STRIDE)) == ([49, 49], [16, 20])
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR) == (16, 320000, 0.01)
    shapes = build_backbone(cfg).output_shape()
    assert [(shapes[f].channels, shapes[f].stride) for f in sem.IN_FEATURES] == [
        (16, 2),
        (24, 4),
        (960, 8),
    ]


# ---------------------------------------------------------------- OCRNet on HRNetV2


@pytest.mark.parametrize(("width", "concat"), [(18, 18 + 36 + 72 + 144), (48, 48 + 96 + 192 + 384)])
def test_hrnet_ocr_parameter_count_equals_mmsegmentations_cascade(width, concat):
    """MMSeg ocrnet_hr{18,48}: FCNHead on the concatenated branches (one 1x1 conv-BN-ReLU,
    `concat` channels, no dropout) then OCRHead (3x3 conv to 512, 256-d keys, no dropout)."""
    cfg = load_config(
        str(
            CONFIG_ROOT
            / f"Cityscapes-SemanticSegmentation/ocrnet_HRNetV2_W{width}_512x1024_80k.yaml"
        ),
        CPU + ["MODEL.SEM_SEG_HEAD.NORM", "BN"],
    )
    head = SEM_SEG_HEADS_REGISTRY.get("OCRHead")(
        cfg, {"hr_concat": ShapeSpec(channels=concat, stride=4)}
    )
    aux = conv(1, concat, concat) + bn(concat) + conv(1, concat, 19, bias=True)
    ocr = [
        conv(3, concat, 512) + bn(512),  # bottleneck
        2 * (conv(1, 512, 256) + bn(256) + conv(1, 256, 256) + bn(256)),  # query, key
        conv(1, 512, 256) + bn(256),  # value
        conv(1, 256, 512) + bn(512),  # out
        conv(1, 1024, 512) + bn(512),  # fusion of [context, feature]
        conv(1, 512, 19, bias=True),  # conv_seg
    ]
    assert sum(p.numel() for p in head.parameters()) == aux + sum(ocr)
    assert isinstance(head.classifier.dropout, torch.nn.Identity)
    assert isinstance(head.aux_heads[0][1].dropout, torch.nn.Identity)
