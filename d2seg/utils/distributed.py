"""Multi-process training on CPU with Detectron2's DefaultTrainer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import detectron2.engine.defaults as detectron2_defaults


@contextlib.contextmanager
def cpu_friendly_ddp() -> Iterator[None]:
    """Let DefaultTrainer wrap CPU models in DistributedDataParallel.

    Detectron2's `create_ddp_model` always passes `device_ids=[local_rank]`, which PyTorch
    rejects for a CPU module; inside this context a CPU model gets `device_ids=None` (what DDP
    requires on CPU), so `train_net.py --num-gpus N MODEL.DEVICE cpu` trains N processes over
    gloo. GPU models are wrapped exactly as before.
    """
    # DefaultTrainer.__init__ calls this module-level function directly and offers no hook for
    # the DDP wrapping, so the function is swapped for the duration of the trainer's __init__
    original = detectron2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    detectron2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        detectron2_defaults.create_ddp_model = original
