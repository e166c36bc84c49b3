"""DefaultTrainer wired to d2seg's loaders, evaluators and solver, that resumes exactly and
stops on a non-finite loss naming it."""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from d2seg.data import build_test_mapper, build_train_mapper
from d2seg.engine.checkpoint import D2SegCheckpointer
from d2seg.engine.data import build_resumable_train_loader
from d2seg.engine.inference import optimized_inference
from d2seg.evaluation import build_evaluator
from d2seg.modeling.test_time_augmentation import build_rcnn_tta
from d2seg.solver import build_lr_scheduler, build_optimizer
from d2seg.utils.distributed import cpu_friendly_ddp

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


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise Detectron2's FloatingPointError naming the non-finite term(s) of `loss_dict` and
    the iteration. Detectron2's own check, on process 0 only and after the backward pass, tests
    the sum of the terms averaged over processes and prints them all without saying which one
    failed."""
    if not loss_dict:
        return
    values = torch.stack([value.detach().float().reshape(()) for value in loss_dict.values()])
    if bool(torch.isfinite(values).all()):  # one device sync per iteration
        return
    terms = {name: float(value) for name, value in zip(loss_dict, values)}
    bad = ", ".join(f"{k}={v}" for k, v in sorted(terms.items()) if not np.isfinite(v))
    raise FloatingPointError(
        f"Loss became infinite or NaN at iteration={iteration}: {bad} "
        f"(process {comm.get_rank()}); all terms: "
        + ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
    )


def _non_finite_loss_hook(trainer: DefaultTrainer) -> Callable:
    """A forward hook for the trained model that checks its loss dict (training mode only) with
    :func:`check_losses_finite`, before the backward pass and the optimizer step. Detectron2's
    SimpleTrainer says "if you want to do something with the losses, you can wrap the model";
    a forward hook does so without changing the model's type or state-dict keys."""
    trainer_ref = weakref.ref(trainer)  # the model must not keep its trainer alive

    def check(module: torch.nn.Module, inputs, outputs) -> None:
        trainer = trainer_ref()
        if trainer is not None and module.training and isinstance(outputs, Mapping):
            check_losses_finite(outputs, trainer.iter)

    return check


class D2SegTrainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with d2seg's components, for jobs that get killed
    (docs/running_at_scale.md).

    - The training mapper and the test mapper come from the model the config builds
      (:func:`d2seg.data.build_train_mapper`), the evaluators from each test dataset's
      `evaluator_type` (:func:`d2seg.evaluation.build_evaluator`), the optimizer and LR schedule
      from :mod:`d2seg.solver`; each falls back to Detectron2's.
    - ``--num-gpus N`` also trains N processes on CPU (:func:`cpu_friendly_ddp`).
    - Checkpoints are written atomically (:class:`D2SegCheckpointer`).
    - ``--resume`` continues the data order (the loader's :class:`ResumableSampler` skips the
      batches already trained on) and, with SEED >= 0, the random streams
      (:class:`ReseedAtCheckpoints`): with DATALOADER.NUM_WORKERS 0 the final weights equal
      those of an uninterrupted run.
    - Evaluation runs with the options of TEST.AMP, TEST.CHANNELS_LAST and TEST.IMS_PER_BATCH
      (:mod:`d2seg.engine.inference`).
    - A NaN / inf loss term stops training naming the term and the iteration; the last
      checkpoint stays the last good one (the failing step never reaches the optimizer).
    """

    def __init__(self, cfg: CfgNode):
        with cpu_friendly_ddp():
            super().__init__(cfg)
        self.model.register_forward_hook(_non_finite_loss_hook(self))

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Iterable[list[dict]]:
        return build_resumable_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Iterable[list[dict]]:
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_test_mapper(cfg), batch_size=cfg.TEST.IMS_PER_BATCH
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None):
        """DefaultTrainer.test with the inference options of TEST.AMP and TEST.CHANNELS_LAST
        (:func:`d2seg.engine.inference.optimized_inference`)."""
        with optimized_inference(cfg, model) as inference_model:
            return super().test(cfg, inference_model, evaluators)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model: torch.nn.Module) -> OrderedDict:
        """Evaluate `model` with test-time augmentation (TEST.AUG.*, :func:`build_rcnn_tta`)
        into OUTPUT_DIR/inference_TTA/<dataset>; result keys get a ``_TTA`` suffix, as in
        Detectron2's tools/train_net.py."""
        logger.info("Running inference with test-time augmentation ...")
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, build_rcnn_tta(cfg, model), evaluators)
        return OrderedDict((task + "_TTA", value) for task, value in results.items())

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
        sampler = getattr(self.data_loader, "resumable_sampler", None)
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
