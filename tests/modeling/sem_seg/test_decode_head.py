"""The decode-head base: MMSegmentation's defaults, cross-entropy, OHEM, and every head's
parameter count and one training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from d2seg.config import add_d2seg_config
from d2seg.modeling.sem_seg.decode_head import (
    AUX_HEAD_DEFAULTS,
    ohem_pixel_weights,
    sem_seg_loss,
)
from tests.helpers.modules import one_sgd_step
from tests.helpers.sem_seg_heads import (
    AUX,
    CLS,
    EXTRA_LOSSES,
    HEADS,
    LAYER_PARAMS,
    head_cfg,
)


def test_defaults_are_mmsegmentations():
    cfg = add_d2seg_config(get_cfg())
    sem, test = cfg.MODEL.SEM_SEG_HEAD, cfg.TEST.SEM_SEG
    assert (sem.DROPOUT, sem.ALIGN_CORNERS, sem.IGNORE_VALUE) == (0.1, False, 255)
    assert list(sem.AUX) == []
    assert AUX_HEAD_DEFAULTS == {
        "IN_FEATURE": "res4",
        "CHANNELS": 256,
        "NUM_CONVS": 1,
        "KERNEL_SIZE": 3,
        "LOSS_WEIGHT": 0.4,
    }
    assert (sem.OHEM, sem.OHEM_THRESH, sem.OHEM_MIN_KEPT) == (False, 0.7, 100000)
    assert (sem.AVG_NON_IGNORE, list(sem.CLASS_WEIGHTS)) == (False, [])
    assert (sem.FCN.NUM_CONVS, sem.FCN.CONCAT_INPUT) == (2, True)
    assert list(sem.PSP.POOL_SCALES) == [1, 2, 3, 6] and sem.DEEPLABV3PLUS.C1_CHANNELS == 48
    assert (test.MODE, list(test.CROP_SIZE), list(test.STRIDE)) == ("whole", [769, 769], [513, 513])
    assert (list(test.SCALES), test.FLIP) == ([1.0], False)
    assert (cfg.MODEL.RESNETS.RES4_DILATION, cfg.MODEL.RESNETS.CONTRACT_DILATION) == (1, False)
    assert tuple(cfg.INPUT.SEM_SEG_RATIO_RANGE) == (0.5, 2.0)


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


@pytest.mark.parametrize("name", HEADS)
def test_parameter_count_equals_the_layer_list(name):
    cfg, shapes = head_cfg(name)
    head = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, shapes)
    classifier = CLS if head.has_classifier else 0
    assert sum(p.numel() for p in head.parameters()) == sum(LAYER_PARAMS[name]) + classifier + AUX
    if head.has_classifier:
        dropout = head.classifier.dropout
        assert isinstance(dropout, torch.nn.Dropout2d) and dropout.p == 0.1


@pytest.mark.parametrize("name", HEADS)
def test_one_step_lowers_the_loss_and_outputs_are_at_input_resolution(name):
    torch.manual_seed(0)
    cfg, shapes = head_cfg(name, in_channels=64, num_classes=5)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
    cfg.MODEL.SEM_SEG_HEAD.AUX = [{"IN_FEATURE": "res4", "CHANNELS": 8}]
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
    aux_logits = head.aux_logits(features, 0)  # before the step
    expected_aux = 0.4 * sem_seg_loss(aux_logits, targets)
    losses = one_sgd_step(head, features, targets)
    before = losses["before"]
    assert set(before) == {"loss_sem_seg", "loss_sem_seg_aux"} | EXTRA_LOSSES.get(name, set())
    torch.testing.assert_close(before["loss_sem_seg_aux"], expected_aux)
    assert sum(losses["after"].values()) < sum(before.values())
    logits, _ = head.eval()(features)
    assert logits.shape == (2, 5, 64, 96)
