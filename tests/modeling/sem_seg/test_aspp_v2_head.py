"""DeepLab v2's ASPP-L."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from tests.helpers.sem_seg_heads import (
    head_cfg,
)


def test_deeplab_v2_sums_four_atrous_branches_to_class_logits():
    cfg, shapes = head_cfg("ASPPV2Head", in_channels=8, num_classes=3)
    head = SEM_SEG_HEADS_REGISTRY.get("ASPPV2Head")(cfg, shapes).eval()
    assert [b.dilation[0] for b in head.branches] == [6, 12, 18, 24]
    x = torch.randn(1, 8, 30, 30)
    expected = sum(
        F.conv2d(x, b.weight, b.bias, padding=r, dilation=r)
        for b, r in zip(head.branches, (6, 12, 18, 24))
    )
    torch.testing.assert_close(head.predict({"res5": x}), expected)
