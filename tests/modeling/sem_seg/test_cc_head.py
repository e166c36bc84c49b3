"""CCNet's criss-cross attention against dense attention on the row and column."""

from __future__ import annotations

import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from d2seg.modeling.sem_seg.cc_head import CrissCrossAttention
from tests.helpers.sem_seg_heads import (
    flat,
    head_cfg,
)


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
        q, k, v = (flat(proj(x)[n]) for proj in (module.query, module.key, module.value))
        energy = (q @ k.T).masked_fill(~mask, float("-inf"))
        expected = 0.5 * torch.softmax(energy, dim=1) @ v + flat(x[n])
        torch.testing.assert_close(flat(module(x)[n]), expected)


def test_ccnet_applies_criss_cross_attention_twice():
    cfg, shapes = head_cfg("CCHead", in_channels=32, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
    head = SEM_SEG_HEADS_REGISTRY.get("CCHead")(cfg, shapes).eval()
    calls = []
    head.cca.register_forward_hook(lambda *args: calls.append(1))
    head({"res5": torch.randn(1, 32, 4, 4)})
    assert len(calls) == 2
