"""Training that survives killed jobs, bad checkpoints and diverging losses (issue 10)."""

from d2seg.engine.checkpoint import D2SegCheckpointer
from d2seg.engine.data import ResumableSampler, build_resumable_train_loader
from d2seg.engine.trainer import D2SegTrainer

__all__ = ["D2SegCheckpointer", "D2SegTrainer", "ResumableSampler", "build_resumable_train_loader"]
