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


def test_unknown_optimizer_is_named():
    cfg = load_config(QUICKSTART, ["SOLVER.OPTIMIZER", "LAMB"])
    with pytest.raises(ValueError, match="LAMB"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))
