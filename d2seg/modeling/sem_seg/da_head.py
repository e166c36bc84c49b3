"""DANet (Fu et al., CVPR 2019), as MMSegmentation's `DAHead` (`danet_r50-d8`): two branches on
res5, each a 3x3 conv to 512 channels, an attention module and another 3x3 conv. Position
attention (paper sec. 3.2) attends over all positions with 64-channel queries and keys
(`pam_channels`); channel attention (sec. 3.3) attends over channels with the energies turned
into max(energy) - energy first, as the authors' code does. Each module adds its output, scaled
by a learnt gamma that starts at 0, to its input. The sum of the branches feeds the main
classifier; in training each branch also has its own classifier and loss (sec. 3.4: three
losses, equally weighted)."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.modeling.mixed_precision import fp32_softmax_affinity
from d2seg.modeling.sem_seg.decode_head import (
    Classifier,
    DecodeHead,
    conv_norm_relu,
    sem_seg_head_config,
)


class PositionAttention(nn.Module):
    """out = gamma * V softmax(Q^T K)^T + x, with Q, K 1x1 convs to `key_channels` and V a 1x1
    conv keeping the channels; every position attends to all H x W positions. Mixed precision:
    the affinity and its softmax are computed in float32 (:func:`fp32_softmax_affinity`)."""

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, Ck)
        key = self.key(x).flatten(2)  # (N, Ck, HW)
        attention = fp32_softmax_affinity(torch.bmm, query, key)  # (N, HW, HW)
        context = torch.bmm(self.value(x).flatten(2), attention.transpose(1, 2))
        return self.gamma * context.view(n, c, h, w) + x


def channel_affinity(flat: Tensor) -> Tensor:
    """(N, C, C) max(E) - E for E = X X^T, X (N, C, HW) (the DANet authors' code)."""
    energy = torch.bmm(flat, flat.transpose(1, 2))
    return energy.max(dim=-1, keepdim=True).values - energy


class ChannelAttention(nn.Module):
    """out = gamma * softmax(max(E) - E) X + x, with E = X X^T the (C, C) channel energies.
    Mixed precision: E and its softmax are computed in float32 (:func:`fp32_softmax_affinity`;
    E sums H x W squares, 64 x 128 of them at D8 on 512 x 1024 crops, so it overflows float16
    for activations of a few units already)."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        flat = x.flatten(2)  # (N, C, HW)
        attention = fp32_softmax_affinity(channel_affinity, flat)  # (N, C, C)
        return self.gamma * torch.bmm(attention, flat).view(n, c, h, w) + x


@sem_seg_head_config("DANET")
def add_danet_config(node: CfgNode) -> None:
    """DANet's position attention (MMSegmentation `DAHead`)."""
    node.PAM_CHANNELS = 64  # position-attention query / key width (MMSeg DAHead pam_channels)


@SEM_SEG_HEADS_REGISTRY.register()
class DAHead(DecodeHead):
    """Args (beyond :class:`DecodeHead`'s): pam_channels (DANET.PAM_CHANNELS)."""

    config_nodes = ("DANET",)

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, pam_channels: int = 64, **kwargs):
        super().__init__(input_shape, **kwargs)
        in_channels, channels = input_shape[self.in_features[0]].channels, self.channels
        self.branches = nn.ModuleDict(
            {
                name: nn.Sequential(
                    conv_norm_relu(in_channels, channels, 3, self.norm),
                    attention,
                    conv_norm_relu(channels, channels, 3, self.norm),
                )
                for name, attention in (
                    ("pam", PositionAttention(channels, pam_channels)),
                    ("cam", ChannelAttention()),
                )
            }
        )
        self.branch_classifiers = nn.ModuleDict(
            {
                name: Classifier(channels, self.num_classes, self.dropout_ratio)
                for name in ("pam", "cam")
            }
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape) | {
            "pam_channels": cfg.MODEL.SEM_SEG_HEAD.DANET.PAM_CHANNELS
        }

    def branch_outputs(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        x = features[self.in_features[0]]
        return {name: branch(x) for name, branch in self.branches.items()}

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        return sum(self.branch_outputs(features).values())

    def losses(self, features: dict[str, Tensor], targets: Tensor) -> dict:
        """`loss_sem_seg` on the summed branches, `loss_sem_seg_pam` / `loss_sem_seg_cam` on each
        branch's own classifier (each x LOSS_WEIGHT), and the auxiliary head's loss."""
        outputs = self.branch_outputs(features)
        logits = {"": self.classifier(sum(outputs.values()))}
        logits |= {f"_{name}": self.branch_classifiers[name](x) for name, x in outputs.items()}
        losses = {
            f"loss_sem_seg{suffix}": self.loss(x, targets) * self.loss_weight
            for suffix, x in logits.items()
        }
        return losses | self.aux_losses(features, targets)
