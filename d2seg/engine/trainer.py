"""DefaultTrainer that resumes exactly and stops on a non-finite loss naming it."""

from __future__ import annotations

import logging
import math
import weakref

import numpy as np
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from d2seg.engine.checkpoint import D2SegCheckpointer

logger = logging.getLogger(__name__)


def reseed(seed: int, iteration: int) -> None:
    """Seed python, numpy and torch from (SEED, process rank, iteration)."""
    state = np.random.SeedSequence([seed, comm.get_rank(), iteration]).generate_state(1)[0]
    seed_all_rng(int(state))


class ReseedAtCheckpoints(HookBase):
    """Re-seeds every process's RNGs after each iteration that ends with a checkpoint, so that
    a run resumed from that checkpoint (which re-seeds the same way before its first
    iteration) draws the same random numbers as the uninterrupted run: augmentations, RoI
    sampling, dropout. Detectron2 keeps no RNG state in its checkpoints."""

    def __init__(self, seed: int, period: int):
        self._seed, self._period = seed, period

    def before_train(self) -> None:
        if self.trainer.start_iter > 0:
            reseed(self._seed, self.trainer.start_iter)

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0:  # fvcore's PeriodicCheckpointer test
            reseed(self._seed, self.trainer.iter + 1)


def _raise_on_non_finite_loss(write_metrics):
    """Wrap SimpleTrainer._write_metrics: a non-finite loss term raises Detectron2's
    FloatingPointError on the process where it occurs, naming the term(s) and the iteration,
    before the optimizer steps. Detectron2's own check, on process 0 only, tests the sum of
    the terms averaged over processes and prints them all, without saying which one failed."""

    def checked(loss_dict, data_time, prefix="", iter=None):
        bad = {k: float(v) for k, v in loss_dict.items() if not math.isfinite(float(v))}
        if bad:
            iteration = write_metrics.__self__.iter if iter is None else iter
            terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={iteration}: {terms} "
                f"(process {comm.get_rank()}); all terms: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in loss_dict.items())
            )
        return write_metrics(loss_dict, data_time, prefix, iter)

    return checked


class D2SegTrainer(DefaultTrainer):
    """Detectron2's DefaultTrainer for jobs that get killed (README, "Running at scale").

    - Checkpoints are written atomically (:class:`D2SegCheckpointer`).
    - ``--resume`` continues the data order (the loader's :class:`ResumableSampler` skips the
      batches already trained on) and, with SEED >= 0, the random streams
      (:class:`ReseedAtCheckpoints`): with DATALOADER.NUM_WORKERS 0 the final weights equal
      those of an uninterrupted run.
    - A NaN / inf loss term stops training naming the term and the iteration; the last
      checkpoint stays the last good one (the failing step never reaches the optimizer).
    """

    def __init__(self, cfg: CfgNode):
        super().__init__(cfg)
        self._trainer._write_metrics = _raise_on_non_finite_loss(self._trainer._write_metrics)

    def build_hooks(self) -> list[HookBase]:
        # DefaultTrainer.__init__ creates self.checkpointer, then calls build_hooks, whose
        # PeriodicCheckpointer takes self.checkpointer: replace it here, with the same state
        self.checkpointer = D2SegCheckpointer(
            self.checkpointer.model,
            self.cfg.OUTPUT_DIR,
            trainer=weakref.proxy(self),
        )
        hooks = super().build_hooks()
        if self.cfg.SEED >= 0:  # last: after evaluation, which also draws random numbers
            hooks.append(ReseedAtCheckpoints(self.cfg.SEED, self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return hooks

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        sampler = getattr(self._trainer.data_loader, "resumable_sampler", None)
        if self.start_iter == 0:
            return
        if sampler is None:
            logger.warning(
                "the training loader has no resumable_sampler (use "
                "d2seg.engine.build_resumable_train_loader): data order restarts from its start"
            )
            return
        sampler.start_batch = self.start_iter
        logger.info(f"resuming the data order after {self.start_iter} batches")
