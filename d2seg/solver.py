"""Optimizers and LR schedules picked by name from the config (SOLVER.OPTIMIZER,
SOLVER.LR_SCHEDULER_NAME); anything d2seg does not add is Detectron2's own."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as detectron2_lr_scheduler
from detectron2.solver import build_optimizer as detectron2_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import ParamScheduler

from d2seg.config import register_config


@register_config("SOLVER.OPTIMIZER", "SOLVER.POLY_LR_POWER", "SOLVER.POLY_LR_END")
def add_solver_config(cfg: CfgNode) -> None:
    """The optimizers and the poly schedule this module adds to Detectron2's."""
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" (Detectron2's), "ADAM" (Panoptic-DeepLab), "ADAMW" (Swin)
    cfg.SOLVER.POLY_LR_POWER = 0.9  # for LR_SCHEDULER_NAME "WarmupPolyLR" (DeepLab's poly)
    cfg.SOLVER.POLY_LR_END = 0.0  # absolute LR the poly schedule ends at (MMSeg min_lr 1e-4)


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "SGD": Detectron2's; "ADAM" / "ADAMW": Adam / AdamW with Detectron2's
    parameter groups (BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_NORM) and gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return detectron2_optimizer(cfg, model)
    if name in ("ADAM", "ADAMW"):  # ADAMW: MMSegmentation's Swin configs
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            # no decay on Swin's position tables (MMSeg upernet_swin paramwise custom_keys)
            overrides={
                k: {"weight_decay": 0.0}
                for k in ("relative_position_bias_table", "absolute_pos_embed")
            },
        )
        optimizer = torch.optim.AdamW if name == "ADAMW" else torch.optim.Adam
        return maybe_add_gradient_clipping(cfg, optimizer)(params, lr=cfg.SOLVER.BASE_LR)
    raise ValueError(f"SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r} is not 'SGD', 'ADAM' or 'ADAMW'")


class PolynomialDecayToParamScheduler(ParamScheduler):
    """(start - end) * (1 - t)^power + end over t in [0, 1]: mmcv's ``PolyLrUpdaterHook``
    (MMSegmentation's ``poly`` policy with ``min_lr``); with end 0 it is DeepLab's poly."""

    def __init__(self, start: float, end: float, power: float):
        self._start, self._end, self._power = start, end, power

    def __call__(self, where: float) -> float:
        return (self._start - self._end) * (1.0 - where) ** self._power + self._end


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (polynomial decay (1 - t)^POLY_LR_POWER from
    BASE_LR down to POLY_LR_END after Detectron2's warm-up; DeepLab's and MMSegmentation's poly
    schedule) or any of Detectron2's. Detectron2 scales every parameter group by one
    multiplier, so a group with its own LR (BIAS_LR_FACTOR) ends at POLY_LR_END times its
    factor, where MMSegmentation ends every group at min_lr."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return detectron2_lr_scheduler(cfg, optimizer)
    if not 0.0 <= cfg.SOLVER.POLY_LR_END <= cfg.SOLVER.BASE_LR:
        raise ValueError(
            f"SOLVER.POLY_LR_END {cfg.SOLVER.POLY_LR_END} must lie in [0, BASE_LR "
            f"{cfg.SOLVER.BASE_LR}]"
        )
    decay = PolynomialDecayToParamScheduler(
        1.0, cfg.SOLVER.POLY_LR_END / cfg.SOLVER.BASE_LR, cfg.SOLVER.POLY_LR_POWER
    )
    schedule = WarmupParamScheduler(
        decay,
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
        cfg.SOLVER.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=cfg.SOLVER.MAX_ITER)
