"""OCRNet's object regions and attention against the paper's equations."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from d2seg.modeling.sem_seg.ocr_head import ObjectAttention, gather_object_regions
from tests.helpers.sem_seg_heads import (
    flat,
    head_cfg,
)


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
        q = flat(block.query(x)[n])
        k = block.key(objects[n][None, :, :, None])[0, :, :, 0].T
        v = block.value(objects[n][None, :, :, None])[0, :, :, 0].T
        context = torch.softmax(q @ k.T / 2.0, dim=1) @ v  # sqrt(d) = sqrt(4)
        context = block.out(context.T.reshape(1, 4, 3, 4))
        expected = block.fuse(torch.cat([context, x[n : n + 1]], dim=1))
        torch.testing.assert_close(out[n : n + 1], expected)
    cfg, shapes = head_cfg("OCRHead", in_channels=32, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.AUX = []
    with pytest.raises(ValueError, match="first auxiliary FCN head: set MODEL.SEM_SEG_HEAD.AUX"):
        SEM_SEG_HEADS_REGISTRY.get("OCRHead")(cfg, shapes)
