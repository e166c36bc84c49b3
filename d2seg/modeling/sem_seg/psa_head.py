"""PSANet (Zhao et al., ECCV 2018), bi-directional point-wise spatial attention, as
MMSegmentation's `PSAHead` (`psanet_r50-d8`, `psa_type="bi-direction"`, not compact, mask
97 x 97, maps shrunk x2, softmax), in plain PyTorch instead of mmcv's `PSAMask` op.

Each branch (collect, distribute; paper sec. 3.2) reduces res5 to 512 channels (1x1 conv),
shrinks the map by 2, predicts at every position p an over-complete 97 x 97 mask of weights
centred on p (1x1 conv-BN-ReLU, 1x1 conv), and turns it into an (HW x HW) attention:
collect gives the weight of source q for target p from p's mask, distribute the weight of
target q for source p from p's mask. Positions outside the map are dropped; the zeros left by
the mask's off-map part still take part in the softmax over sources, as in MMSegmentation.
[collected, distributed] is projected back to 2048 channels (1x1 conv-BN-ReLU), upsampled and
fused with res5 by a 3x3 conv-BN-ReLU."""

from __future__ import annotations

from functools import partial

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.mixed_precision import fp32_softmax_affinity
from d2seg.modeling.sem_seg.decode_head import (
    DecodeHead,
    conv_norm_relu,
    resize,
    sem_seg_head_config,
)

PSA_MODES = ("collect", "distribute")


def psa_mask(masks: Tensor, mask_size: tuple[int, int], mode: str) -> Tensor:
    """(N, Mh Mw, H, W) over-complete masks -> (N, HW, H, W) attention over sources q (dim 1)
    for each target position p = (h, w), as mmcv's PSAMask: mask cell m of position p covers
    q = p + m - (M - 1) // 2; "collect" writes it at [q, p], "distribute" at [p, q]."""
    if mode not in PSA_MODES:
        raise ValueError(f"PSA mode {mode!r} is not one of {PSA_MODES}")
    n, _, h, w = masks.shape
    mh, mw = mask_size
    py, px = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    my, mx = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")
    qy = py.reshape(1, -1) + my.reshape(-1, 1) - (mh - 1) // 2  # (M, HW)
    qx = px.reshape(1, -1) + mx.reshape(-1, 1) - (mw - 1) // 2
    valid = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
    m_index, p_index = valid.nonzero(as_tuple=True)
    q_index = qy[valid] * w + qx[valid]
    values = masks.reshape(n, mh * mw, h * w)[:, m_index, p_index]
    out = masks.new_zeros(n, h * w, h * w)
    if mode == "collect":
        out[:, q_index, p_index] = values
    else:
        out[:, p_index, q_index] = values
    return out.view(n, h * w, h, w)


class PSABranch(nn.Module):
    """Reduce, shrink, predict masks, attend: (N, C, H, W) -> (N, channels, H', W'). Mixed
    precision: the attention's softmax is computed in float32 (:func:`fp32_softmax_affinity`;
    its logits come from a conv, not a product, but are taken the same way as every block's)."""

    def __init__(self, in_channels: int, channels: int, mask_size, norm: str, mode: str):
        super().__init__()
        self.reduce = conv_norm_relu(in_channels, channels, 1, norm)
        self.attention = nn.Sequential(
            conv_norm_relu(channels, channels, 1, norm),
            nn.Conv2d(channels, mask_size[0] * mask_size[1], 1, bias=False),
        )
        self.mask_size, self.mode = tuple(mask_size), mode

    def forward(self, x: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
        x = resize(self.reduce(x), size, align_corners)
        n, c, h, w = x.shape
        to_attention = partial(psa_mask, mask_size=self.mask_size, mode=self.mode)
        weights = fp32_softmax_affinity(to_attention, self.attention(x), dim=1)
        return torch.bmm(x.view(n, c, h * w), weights.view(n, h * w, h * w)).view(n, c, h, w)


@sem_seg_head_config("PSA")
def add_psa_config(node: CfgNode) -> None:
    """PSANet's point-wise spatial attention (MMSegmentation `PSAHead`)."""
    node.MASK_SIZE = [97, 97]  # over-complete attention mask (h, w) (MMSeg, 512x1024 crops)
    node.SHRINK_FACTOR = 2  # attention on the map shrunk by this (MMSeg PSAHead)


@SEM_SEG_HEADS_REGISTRY.register()
class PSAHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): mask_size (PSA.MASK_SIZE), shrink_factor
    (PSA.SHRINK_FACTOR)."""

    config_nodes = ("PSA",)

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        mask_size: tuple[int, int] = (97, 97),
        shrink_factor: int = 2,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels, channels, norm = (
            input_shape[self.in_features[0]].channels,
            self.channels,
            self.norm,
        )
        self.branches = nn.ModuleList(
            PSABranch(in_channels, channels, mask_size, norm, mode) for mode in PSA_MODES
        )
        self.proj = conv_norm_relu(2 * channels, in_channels, 1, norm)
        self.bottleneck = conv_norm_relu(2 * in_channels, channels, 3, norm)
        self.shrink_factor = shrink_factor

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        psa = cfg.MODEL.SEM_SEG_HEAD.PSA
        return cls.base_config(cfg, input_shape) | {
            "mask_size": tuple(psa.MASK_SIZE),
            "shrink_factor": psa.SHRINK_FACTOR,
        }

    def shrunk_size(self, h: int, w: int) -> tuple[tuple[int, int], bool]:
        """MMSegmentation's shrink: (s - 1) // f + 1 with corners aligned when f divides
        neither side, else s // f."""
        f = self.shrink_factor
        if h % f and w % f:
            return ((h - 1) // f + 1, (w - 1) // f + 1), True
        return (h // f, w // f), False

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        x = features[self.in_features[0]]
        size, align_corners = self.shrunk_size(*x.shape[-2:])
        out = torch.cat([b(x, size, align_corners) for b in self.branches], dim=1)
        out = resize(self.proj(out), x.shape[-2:], self.align_corners)
        return self.bottleneck(torch.cat([x, out], dim=1))
