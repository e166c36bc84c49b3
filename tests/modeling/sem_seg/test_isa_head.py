"""ISANet's interlaced sparse self-attention."""

from __future__ import annotations

import torch

from d2seg.modeling.sem_seg.isa_head import SelfAttention as IsaSelfAttention
from d2seg.modeling.sem_seg.isa_head import interlaced_sparse_attention
from tests.helpers.sem_seg_heads import flat


def _map_mean(x):
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


def test_isa_long_range_groups_interlaced_pixels_and_short_range_groups_blocks():
    """With each step replaced by "every pixel becomes its group's mean": the long-range groups
    are the pixels with the same offset (row % 4, col % 4) in the 4 x 4 blocks, the short-range
    groups the blocks (row // 4, col // 4)."""
    x = torch.randn(2, 3, 8, 12)
    y = interlaced_sparse_attention(x, _map_mean, lambda t: t, (4, 4))
    z = interlaced_sparse_attention(x, _map_mean, _map_mean, (4, 4))
    long, expected = torch.zeros_like(x), torch.zeros_like(x)
    for r in range(8):
        for c in range(12):
            long[..., r, c] = x[..., r % 4 :: 4, c % 4 :: 4].mean(dim=(-2, -1))
    for r in range(8):
        for c in range(12):
            block = long[..., r // 4 * 4 : r // 4 * 4 + 4, c // 4 * 4 : c // 4 * 4 + 4]
            expected[..., r, c] = block.mean(dim=(-2, -1))
    torch.testing.assert_close(y, long)
    torch.testing.assert_close(z, expected)
    odd = torch.randn(1, 2, 10, 7)  # padded to 12 x 8, then cropped back
    torch.testing.assert_close(
        interlaced_sparse_attention(odd, _map_mean, _map_mean, (4, 4)).shape, odd.shape
    )
    identity = interlaced_sparse_attention(odd, lambda t: t, lambda t: t, (4, 4))
    torch.testing.assert_close(identity, odd)


def test_isa_self_attention_is_scaled_softmax_qkt_v_then_out_conv():
    torch.manual_seed(0)
    block = IsaSelfAttention(6, 4, "").eval()
    x = torch.randn(2, 6, 3, 3)
    with torch.no_grad():
        for n in range(2):
            q, k, v = (flat(proj(x)[n]) for proj in (block.query, block.key, block.value))
            context = torch.softmax(q @ k.T / 2.0, dim=1) @ v  # sqrt(4)
            expected = block.out(context.T.reshape(1, 6, 3, 3))
            torch.testing.assert_close(block(x)[n : n + 1], expected)
