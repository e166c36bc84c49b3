"""The semantic quickstart configs train and evaluate through the training script."""

from __future__ import annotations

import pytest

from d2seg.config import load_config
from d2seg.engine import D2SegTrainer
from tests.helpers.scripts import REPO_ROOT
from tests.helpers.sem_seg_heads import (
    QUICKSTARTS,
)


@pytest.mark.parametrize("head", sorted(QUICKSTARTS))
def test_quickstart_trains_and_reports_miou(head, synthetic_root, tmp_path):
    """A few iterations of tools/train_net.py's trainer on the quickstart config, shrunk; the
    final evaluation reports mIoU (the real figures: docs/model_zoo.md)."""
    cfg = load_config(
        str(REPO_ROOT / QUICKSTARTS[head]),
        [
            "OUTPUT_DIR",
            str(tmp_path),
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "16",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "16",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.CROP.SIZE",
            "(64, 64)",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "96",
        ],
    )
    trainer = D2SegTrainer(cfg)
    trainer.train()
    latest = trainer.storage.latest()
    assert "sem_seg/mIoU" in latest and 0 <= latest["sem_seg/mIoU"][0] <= 100
