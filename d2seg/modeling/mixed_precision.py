"""Attention under mixed precision. An attention block's affinity is a sum of products over
its channels (or positions); with activations in the thousands it exceeds float16's largest
value (65504) and turns into inf, and the softmax over it into NaN. Every attention block in
d2seg therefore takes its affinity and softmax through :func:`fp32_softmax_affinity`: the
affinity and softmax are computed in float32 with autocast off, and only the attention weights,
each in [0, 1], go back to the lower precision. In float32 it changes nothing, so the blocks
keep their reference definitions (no extra scaling)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def fp32_softmax_affinity(
    affinity: Callable[..., Tensor], *inputs: Tensor, dim: int = -1
) -> Tensor:
    """softmax(affinity(*inputs), dim) computed in float32 with autocast disabled, returned in
    the dtype of the first input (a no-op for float32 inputs)."""
    dtype = inputs[0].dtype
    with torch.autocast(inputs[0].device.type, enabled=False):
        weights = affinity(*(x.float() for x in inputs)).softmax(dim=dim)
    return weights.to(dtype)


def scaled_dot_product(query: Tensor, key: Tensor) -> Tensor:
    """query (N, L, D) x key (N, D, S) -> (N, L, S) products scaled by D^-0.5 (Vaswani et al.,
    2017), the affinity of the embedded-Gaussian non-local block and of OCR, ISA and ANN."""
    return torch.bmm(query, key) * query.shape[-1] ** -0.5
