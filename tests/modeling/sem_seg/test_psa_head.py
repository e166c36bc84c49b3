"""PSANet's point-wise spatial attention against a per-position loop."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from d2seg.modeling.sem_seg.psa_head import PSABranch, psa_mask
from tests.helpers.sem_seg_heads import (
    head_cfg,
)


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
    cfg, shapes = head_cfg("PSAHead", in_channels=8, num_classes=3)
    head = SEM_SEG_HEADS_REGISTRY.get("PSAHead")(cfg, shapes)
    assert head.shrunk_size(64, 128) == ((32, 64), False)
    assert head.shrunk_size(65, 129) == ((33, 65), True)
