"""DenseASPP's dense connections."""

from __future__ import annotations

import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from tests.helpers.sem_seg_heads import (
    head_cfg,
)


def test_dense_aspp_layers_read_the_input_and_every_earlier_output():
    cfg, shapes = head_cfg("DenseASPPHead", in_channels=16, num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.DENSE_ASPP.GROWTH = 8, 4
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
