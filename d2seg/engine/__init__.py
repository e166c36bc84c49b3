"""Training that survives killed jobs, bad checkpoints and diverging losses, with d2seg's
loaders, evaluators and solver wired into Detectron2's DefaultTrainer."""

from d2seg.engine.checkpoint import D2SegCheckpointer
from d2seg.engine.data import ResumableSampler, build_resumable_train_loader
from d2seg.engine.inference import MixedPrecisionInference, optimized_inference
from d2seg.engine.trainer import D2SegTrainer, check_losses_finite

__all__ = [
    "D2SegCheckpointer",
    "D2SegTrainer",
    "MixedPrecisionInference",
    "ResumableSampler",
    "build_resumable_train_loader",
    "check_losses_finite",
    "optimized_inference",
]
