"""UPerNet: pyramid pooling plus a top-down FPN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from tests.helpers.sem_seg_heads import (
    head_cfg,
)


def test_upernet_is_ppm_plus_a_top_down_fpn_fused_at_the_finest_level():
    torch.manual_seed(0)
    cfg, shapes = head_cfg("UPerHead", in_channels=64, num_classes=3)
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
