"""Inference options a config switches on: mixed precision, channels-last convolutions and
batched test loaders (TEST.AMP, TEST.CHANNELS_LAST, TEST.IMS_PER_BATCH).

Detectron2's ``CUDNN_BENCHMARK`` is reused as it is: ``default_setup`` (tools/train_net.py)
applies it to the whole process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from detectron2.config import CfgNode
from detectron2.structures import Instances
from torch import nn

from d2seg.config import register_config

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_inference_config(cfg: CfgNode) -> None:
    if cfg.TEST.AMP.DTYPE not in AMP_DTYPES:
        raise ValueError(f"TEST.AMP.DTYPE {cfg.TEST.AMP.DTYPE!r} is not one of {list(AMP_DTYPES)}")
    if cfg.TEST.IMS_PER_BATCH < 1:
        raise ValueError(f"TEST.IMS_PER_BATCH must be >= 1, got {cfg.TEST.IMS_PER_BATCH}")


@register_config(
    "TEST.AMP", "TEST.CHANNELS_LAST", "TEST.IMS_PER_BATCH", check=_check_inference_config
)
def add_inference_config(cfg: CfgNode) -> None:
    """Keys read by :func:`optimized_inference` and the trainer's test loader."""
    cfg.TEST.AMP = CfgNode()
    cfg.TEST.AMP.ENABLED = False  # run the test forward under torch.autocast
    cfg.TEST.AMP.DTYPE = "bfloat16"  # "bfloat16" or "float16" (float16: CUDA only)
    cfg.TEST.CHANNELS_LAST = False  # convolution weights (hence activations) in NHWC layout
    cfg.TEST.IMS_PER_BATCH = 1  # images per test batch and process (Detectron2's loader: 1)


def amp_dtype(cfg: CfgNode) -> torch.dtype | None:
    """The autocast dtype TEST.AMP asks for, or None when it is off."""
    return AMP_DTYPES[cfg.TEST.AMP.DTYPE] if cfg.TEST.AMP.ENABLED else None


def _float32(value):
    """`value` with every reduced-precision floating tensor in it cast to float32: tensors,
    tensor-holding structures (Boxes, PartProbabilities: `type(x)(x.tensor)`), Instances fields,
    and dicts / lists / tuples of them."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, Instances):
        for name, field in value.get_fields().items():
            value.set(name, _float32(field))
        return value
    if isinstance(value, Mapping):
        return type(value)((k, _float32(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value)(_float32(v) for v in value)
    tensor = getattr(value, "tensor", None)
    if isinstance(tensor, torch.Tensor) and tensor.dtype in (torch.float16, torch.bfloat16):
        return type(value)(tensor.float())
    return value


class MixedPrecisionInference(nn.Module):
    """Runs `model` under ``torch.autocast(dtype)`` on its own device and returns its outputs
    with every floating tensor in float32, as evaluators expect."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=self.dtype):
            outputs = self.model(*args, **kwargs)
        return _float32(outputs)


@contextlib.contextmanager
def optimized_inference(cfg: CfgNode, model: nn.Module) -> Iterator[nn.Module]:
    """`model` prepared as TEST.AMP and TEST.CHANNELS_LAST ask: yields the module to call
    (wrapped for autocast when enabled); channels-last weights are converted back to the
    contiguous layout on exit, so training continues on the layout it started with."""
    channels_last = cfg.TEST.CHANNELS_LAST
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(cfg)
    try:
        yield model if dtype is None else MixedPrecisionInference(model, dtype)
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
