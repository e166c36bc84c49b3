"""Optimizers and schedules picked by name (d2seg/solver.py)."""

import pytest
import torch

from d2seg.config import load_config
from d2seg.solver import build_lr_scheduler, build_optimizer
from tests.helpers.configs import CONFIG_ROOT

QUICKSTART = str(CONFIG_ROOT / "quickstart" / "panoptic_deeplab_R_18_synthetic.yaml")


@pytest.mark.parametrize("warmup", [0, 4])
def test_warmup_poly_schedule_is_deeplabs(warmup):
    """lr(t) = BASE_LR (1 - t / MAX_ITER)^0.9; during warm-up Detectron2's linear ramp from
    WARMUP_FACTOR x lr(0) to lr(WARMUP_ITERS)."""
    cfg = load_config(
        QUICKSTART,
        [
            "SOLVER.MAX_ITER",
            "20",
            "SOLVER.BASE_LR",
            "0.01",
            "SOLVER.WARMUP_ITERS",
            str(warmup),
            "SOLVER.WARMUP_FACTOR",
            "0.1",
            "SOLVER.WARMUP_METHOD",
            "linear",
        ],
    )
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.Adam)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for step in range(20):
        poly = 0.01 * (1 - step / 20) ** 0.9
        if step < warmup:
            start, end = 0.1 * 0.01, 0.01 * (1 - warmup / 20) ** 0.9
            poly = start + (end - start) * step / warmup
        assert optimizer.param_groups[0]["lr"] == pytest.approx(poly, rel=1e-6), step
        optimizer.step()
        scheduler.step()


def test_poly_schedule_ends_at_poly_lr_end():
    """MMSegmentation's poly with min_lr: lr(t) = (BASE_LR - end) (1 - t / MAX_ITER)^0.9 + end,
    as mmcv's PolyLrUpdaterHook; the Cityscapes semantic configs end at its 1e-4."""
    cfg = load_config(
        QUICKSTART,
        ["SOLVER.MAX_ITER", "10", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "0"]
        + ["SOLVER.POLY_LR_END", "0.0001"],
    )
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    scheduler = build_lr_scheduler(cfg, optimizer)
    for step in range(11):
        expected = (0.01 - 1e-4) * (1 - step / 10) ** 0.9 + 1e-4
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), step
        optimizer.step()
        scheduler.step()
    semantic = load_config(
        str(CONFIG_ROOT / "Cityscapes-SemanticSegmentation" / "pspnet_R_50_D8_512x1024_80k.yaml")
    )
    assert semantic.SOLVER.POLY_LR_END == 1e-4 and semantic.SOLVER.POLY_LR_POWER == 0.9
    assert load_config(QUICKSTART).SOLVER.POLY_LR_END == 0.0  # DeepLab / Panoptic-DeepLab: to 0


def test_poly_lr_end_above_base_lr_is_named():
    cfg = load_config(QUICKSTART, ["SOLVER.BASE_LR", "0.01", "SOLVER.POLY_LR_END", "0.1"])
    with pytest.raises(ValueError, match="POLY_LR_END 0.1"):
        build_lr_scheduler(cfg, build_optimizer(cfg, torch.nn.Linear(2, 2)))


def test_unknown_optimizer_is_named():
    cfg = load_config(QUICKSTART, ["SOLVER.OPTIMIZER", "LAMB"])
    with pytest.raises(ValueError, match="LAMB"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))
