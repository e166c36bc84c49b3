"""CCNet (Huang et al., ICCV 2019), as MMSegmentation's `CCHead` (`ccnet_r50-d8`): the FCN head
(3x3 conv to 512 channels, 3x3 conv, 3x3 conv over [input, output]) with criss-cross attention
applied `recurrence` = 2 times between its two convs (paper sec. 3.3, "R = 2").

Criss-cross attention (paper sec. 3.2), in plain PyTorch: queries and keys are 1x1 convs to
C / 8 channels, values a 1x1 conv keeping C; each position attends, with one softmax, to the
H + W - 1 positions of its row and column (itself counted once), and the result, scaled by a
learnt gamma that starts at 0, is added to the input."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.mixed_precision import fp32_softmax_affinity
from d2seg.modeling.sem_seg.decode_head import DecodeHead, FCNConvs, sem_seg_head_config

KEY_REDUCTION = 8  # query / key channels = C / 8 (paper sec. 3.2, C' < C; mmcv's choice)


def criss_cross_energies(query: Tensor, key: Tensor) -> Tensor:
    """(N, H, W, H + W): energies to the same column (N, H, W, H'), the position itself
    masked out with -inf, then to the same row (N, H, W, W'), for one softmax over both."""
    h = query.shape[2]
    column = torch.einsum("nchw,ncgw->nhwg", query, key)
    column = column.masked_fill(
        torch.eye(h, dtype=torch.bool, device=query.device)[:, None], -torch.inf
    )
    row = torch.einsum("nchw,nchv->nhwv", query, key)
    return torch.cat([column, row], dim=-1)


class CrissCrossAttention(nn.Module):
    """Criss-cross attention (paper sec. 3.2, described above). Mixed precision: the energies
    and their softmax are computed in float32 (:func:`fp32_softmax_affinity`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // KEY_REDUCTION, 1)
        self.key = nn.Conv2d(channels, channels // KEY_REDUCTION, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        query, key, value = self.query(x), self.key(x), self.value(x)
        attention = fp32_softmax_affinity(criss_cross_energies, query, key)
        out = torch.einsum("ncgw,nhwg->nchw", value, attention[..., :h])
        out = out + torch.einsum("nchv,nhwv->nchw", value, attention[..., h:])
        return self.gamma * out + x


@sem_seg_head_config("CCNET")
def add_ccnet_config(node: CfgNode) -> None:
    """CCNet's criss-cross attention head (MMSegmentation `CCHead`, an FCN head)."""
    node.RECURRENCE = 2  # criss-cross attention passes (paper sec. 3.3, R = 2)
    node.CONCAT_INPUT = True  # concat input and output, then a 3x3 conv (MMSeg CCHead)


@SEM_SEG_HEADS_REGISTRY.register()
class CCHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): recurrence (CCNET.RECURRENCE), concat_input
    (CCNET.CONCAT_INPUT)."""

    config_nodes = ("CCNET",)

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        recurrence: int = 2,
        concat_input: bool = True,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        in_channels = input_shape[self.in_features[0]].channels
        self.fcn = FCNConvs(in_channels, self.channels, 2, concat_input, self.norm)
        self.recurrence = recurrence
        self.cca = CrissCrossAttention(self.channels)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        ccnet = cfg.MODEL.SEM_SEG_HEAD.CCNET
        return cls.base_config(cfg, input_shape) | {
            "recurrence": ccnet.RECURRENCE,
            "concat_input": ccnet.CONCAT_INPUT,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        x = features[self.in_features[0]]
        y = self.fcn.convs[0](x)
        for _ in range(self.recurrence):
            y = self.cca(y)
        y = self.fcn.convs[1](y)
        return y if self.fcn.conv_cat is None else self.fcn.conv_cat(torch.cat([x, y], dim=1))
