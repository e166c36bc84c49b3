"""Optimizers and LR schedules picked by name from the config (SOLVER.OPTIMIZER,
SOLVER.LR_SCHEDULER_NAME); anything d2seg does not add is Detectron2's own."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as detectron2_lr_scheduler
from detectron2.solver import build_optimizer as detectron2_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "SGD": Detectron2's; "ADAM": Adam with Detectron2's parameter groups
    (BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_NORM) and gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return detectron2_optimizer(cfg, model)
    if name == "ADAM":
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        )
        return maybe_add_gradient_clipping(cfg, torch.optim.Adam)(params, lr=cfg.SOLVER.BASE_LR)
    raise ValueError(f"SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r} is not 'SGD' or 'ADAM'")


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (fvcore's polynomial decay (1 - t)^POLY_LR_POWER
    after Detectron2's warm-up; DeepLab's poly schedule) or any of Detectron2's."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return detectron2_lr_scheduler(cfg, optimizer)
    schedule = WarmupParamScheduler(
        PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER),
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
        cfg.SOLVER.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=cfg.SOLVER.MAX_ITER)
