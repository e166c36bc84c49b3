"""Helpers for tests of network modules."""

from __future__ import annotations

import torch


def randomize_bn_statistics(net: torch.nn.Module) -> None:
    """Non-trivial BN running statistics and affine weights, so that a norm mapped to the wrong
    layer, or left out of a plain computation, shows."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def one_sgd_step(head: torch.nn.Module, features: dict, targets: torch.Tensor) -> dict:
    """The losses of `head` (a semantic head: ``head(features, targets)[1]``) before and after
    one SGD step (lr 0.05) on their sum: ``{"before": losses, "after": losses}``."""
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05)
    before = head(features, targets)[1]
    optimizer.zero_grad()
    sum(before.values()).backward()
    optimizer.step()
    return {"before": before, "after": head(features, targets)[1]}
