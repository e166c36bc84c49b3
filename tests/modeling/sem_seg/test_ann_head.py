"""ANN's asymmetric pyramid non-local block."""

from __future__ import annotations

import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from d2seg.modeling.sem_seg.ann_head import PyramidNonLocal, pyramid_pool
from tests.helpers.sem_seg_heads import (
    flat,
    head_cfg,
)


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
        q = flat(block.query(high)[0])
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
    cfg, shapes = head_cfg("ANNHead", in_channels=32, num_classes=3)
    head = SEM_SEG_HEADS_REGISTRY.get("ANNHead")(cfg, shapes)
    # AFNB's fusion is conv-BN without ReLU (MMSeg act_cfg=None), APNB's conv-BN-ReLU
    assert head.afnb_fuse.activation is None and head.apnb_fuse.activation is not None
