"""The UPerNet Swin-T config carries MMSegmentation's recipe (upernet_swin tiny, ADE20K 160k),
and SOLVER.OPTIMIZER "ADAMW" builds its parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from d2seg.config import load_config
from d2seg.modeling.sem_seg.decode_head import AUX_HEAD_DEFAULTS
from d2seg.solver import build_lr_scheduler, build_optimizer
from tests.helpers.configs import CONFIG_ROOT, CPU

SWIN = "ADE20K-SemanticSegmentation/upernet_Swin_T_512x512_160k.yaml"


def test_swin_config_is_mmsegmentations_upernet_swin_tiny():
    cfg = load_config(str(CONFIG_ROOT / SWIN), CPU)
    t, sem, s = cfg.MODEL.TIMM, cfg.MODEL.SEM_SEG_HEAD, cfg.SOLVER
    assert (t.NAME, t.DROP_PATH_RATE, t.OUTPUT_NORM) == ("swin_tiny_patch4_window7_224", 0.3, True)
    assert list(t.OUT_FEATURES) == ["res2", "res3", "res4", "res5"] == list(sem.IN_FEATURES)
    assert (sem.NAME, sem.CONVS_DIM, list(sem.AUX)) == ("UPerHead", 512, [{"IN_FEATURE": "res4"}])
    assert (AUX_HEAD_DEFAULTS["CHANNELS"], AUX_HEAD_DEFAULTS["LOSS_WEIGHT"]) == (256, 0.4)
    assert (sem.NUM_CLASSES, tuple(cfg.INPUT.CROP.SIZE)) == (150, (512, 512))
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM) == ("ADAMW", 6e-5, 0.01, 0)
    assert (s.WARMUP_METHOD, s.WARMUP_FACTOR, s.WARMUP_ITERS) == ("linear", 1e-6, 1500)
    assert (s.POLY_LR_POWER, s.POLY_LR_END, s.MAX_ITER, s.IMS_PER_BATCH) == (1.0, 0.0, 160000, 16)


class _SwinLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.attn = nn.Module()
        self.attn.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))


def test_adamw_leaves_norms_and_position_tables_undecayed():
    cfg = load_config(str(CONFIG_ROOT / SWIN), CPU)
    model = _SwinLike()
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer).__name__.endswith("AdamW")  # possibly wrapped for gradient clipping
    decay = {
        id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]
    }
    assert decay[id(model.fc.weight)] == decay[id(model.fc.bias)] == 0.01
    assert decay[id(model.norm.weight)] == decay[id(model.norm.bias)] == 0.0
    assert decay[id(model.attn.relative_position_bias_table)] == 0.0
    assert all(g["betas"] == (0.9, 0.999) and g["lr"] == 6e-5 for g in optimizer.param_groups)
    scheduler = build_lr_scheduler(cfg, optimizer)
    assert optimizer.param_groups[0]["lr"] == 6e-5 * 1e-6  # warm-up starts at 1e-6 x BASE_LR
    for _ in range(1500):
        optimizer.step()
        scheduler.step()
    # after the warm-up: poly power 1 over 160k iterations, i.e. (1 - 1500 / 160000) x BASE_LR
    assert abs(optimizer.param_groups[0]["lr"] - 6e-5 * (1 - 1500 / 160000)) < 1e-12
