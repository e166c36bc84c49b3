"""In-process training faults for every meta-architecture d2seg trains: exact resume after an
interruption, gradients for every parameter on a batch without foreground (what DDP needs), and
a NaN loss that stops training naming its term."""

import copy
import math
import shutil

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from d2seg.engine import D2SegTrainer
from tests.helpers.configs import (
    CONFIG_ROOT,
    TINY_PANOPTIC_DEEPLAB,
    TINY_RCNN,
    TINY_SEM_SEG,
    resumable_schedule,
)

SMALL_RCNN = TINY_RCNN + ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]
# Mask Scoring R-CNN: tests/reliability/test_kill_resume.py kills and resumes it for real
MODELS = {
    "mask_scoring_rcnn": ("mask_scoring_rcnn_R_18_FPN_synthetic.yaml", SMALL_RCNN),
    "parsing_rcnn_rescoring": (
        "parsing_rcnn_R_18_FPN_synthetic.yaml",
        SMALL_RCNN + ["MODEL.PARSINGIOU_ON", "True"],
    ),
    "mask_scoring_panoptic_fpn": ("panoptic_fpn_mask_scoring_R_18_synthetic.yaml", SMALL_RCNN),
    "panoptic_deeplab": ("panoptic_deeplab_R_18_synthetic.yaml", TINY_PANOPTIC_DEEPLAB),
    "pspnet": ("pspnet_R_18_synthetic.yaml", TINY_SEM_SEG),
}
# 3 iterations at batch 2, a checkpoint after each, no evaluation
SCHEDULE = resumable_schedule(max_iter=3, checkpoint_period=1, warmup_iters=1)


def _cfg(model, output_dir, *extra):
    config, tiny = MODELS[model]
    opts = [*tiny, *SCHEDULE, "OUTPUT_DIR", str(output_dir), *extra]
    return load_config(str(CONFIG_ROOT / "quickstart" / config), opts)


def _trainer(cfg, resume=False):
    seed_all_rng(cfg.SEED)  # what default_setup does in tools/train_net.py
    trainer = D2SegTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("model", [m for m in MODELS if m != "mask_scoring_rcnn"])
def test_training_resumed_from_a_checkpoint_ends_with_the_uninterrupted_weights(
    synthetic_root, tmp_path, model
):
    uninterrupted = _trainer(_cfg(model, tmp_path / "a"))
    uninterrupted.train()
    # what a run killed after its checkpoint of iteration 1 leaves behind
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "model_0000001.pth", tmp_path / "b")
    (tmp_path / "b" / "last_checkpoint").write_text("model_0000001.pth")
    resumed = _trainer(_cfg(model, tmp_path / "b"), resume=True)
    assert resumed.start_iter == 2
    resumed.train()

    expected, got = _weights(uninterrupted), _weights(resumed)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _without_foreground(record, folder):
    """The record with every thing removed: no instance, no thing segment (its pixels of the
    panoptic PNG, rewritten in `folder`, become VOID)."""
    record = copy.deepcopy(record)
    record["annotations"] = []
    if "segments_info" in record:
        ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        things = [s["id"] for s in record["segments_info"] if s["isthing"]]
        ids[np.isin(ids, things)] = 0
        record["pan_seg_file_name"] = str(folder / "without_things.png")
        Image.fromarray(id2rgb(ids)).save(record["pan_seg_file_name"])
        record["segments_info"] = [s for s in record["segments_info"] if not s["isthing"]]
    return record


@pytest.mark.parametrize("model", MODELS)
def test_every_parameter_gets_a_gradient_from_an_image_without_foreground(
    synthetic_root, tmp_path, model
):
    """One process of a DDP run may get a batch without any foreground RoI: each parameter
    must still receive a gradient, or DDP (without find_unused_parameters) fails."""
    cfg = _cfg(model, tmp_path)
    record = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]
    # two images: the pooled branches of PSPNet / ASPP normalise over the batch
    batch = [build_train_mapper(cfg)(_without_foreground(record, tmp_path)) for _ in range(2)]
    seed_all_rng(0)
    model_ = D2SegTrainer.build_model(cfg)
    model_.train()
    with EventStorage():
        losses = model_(batch)
    sum(losses.values()).backward()
    assert all(math.isfinite(float(v)) for v in losses.values()), losses
    without = [n for n, p in model_.named_parameters() if p.requires_grad and p.grad is None]
    assert not without, f"no gradient for {without}"


def test_nan_loss_stops_naming_term_and_iteration_and_keeps_last_good_checkpoint(
    synthetic_root, tmp_path
):
    trainer = _trainer(_cfg("mask_scoring_rcnn", tmp_path, "SOLVER.CHECKPOINT_PERIOD", "1"))

    def poison_at_iteration_1(module, inputs, losses):
        if trainer.iter == 1:
            return dict(losses, loss_maskiou=losses["loss_maskiou"] * float("nan"))
        return None

    # inside the model, where a diverging head's loss turns NaN
    trainer.model.roi_heads.mask_head.register_forward_hook(poison_at_iteration_1)
    with pytest.raises(FloatingPointError, match=r"iteration=1: loss_maskiou=nan"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
    checkpoint = torch.load(tmp_path / "model_0000000.pth", weights_only=False)
    assert checkpoint["iteration"] == 0
    # the failing step never reached the optimizer: the live weights are the checkpoint's
    for name, value in trainer.model.named_parameters():
        assert torch.equal(value, checkpoint["model"][name]), name
