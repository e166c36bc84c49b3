"""DANet's attention modules against the paper's formulas, and its three losses."""

from __future__ import annotations

import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from d2seg.modeling.sem_seg.da_head import ChannelAttention, PositionAttention
from d2seg.modeling.sem_seg.decode_head import sem_seg_loss
from tests.helpers.sem_seg_heads import (
    flat,
    head_cfg,
)


def test_position_attention_is_softmax_qkt_v():
    torch.manual_seed(0)
    module = PositionAttention(6, 3)
    torch.nn.init.constant_(module.gamma, 0.7)
    x = torch.randn(2, 6, 3, 4)
    for n in range(2):
        q, k, v = (flat(proj(x)[n]) for proj in (module.query, module.key, module.value))
        expected = 0.7 * torch.softmax(q @ k.T, dim=1) @ v + flat(x[n])
        torch.testing.assert_close(flat(module(x)[n]), expected)


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


def test_danet_has_three_equally_weighted_losses():
    """Paper sec. 3.4: the fused output and each attention branch get their own loss."""
    torch.manual_seed(0)
    cfg, shapes = head_cfg("DAHead", in_channels=32, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 16, 0.0
    cfg.MODEL.SEM_SEG_HEAD.AUX = []
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
