"""Every config loads through `load_config` and builds; each config family learns a fixed batch."""

from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from d2seg.config import load_config
from d2seg.data import build_train_mapper

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))
MODEL_CONFIGS = [c for c in CONFIGS if not Path(c).name.startswith("Base-")]
CPU = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
# shrinks any R-CNN config to an R-18 that trains in seconds on CPU
TINY_RCNN = CPU + [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "INPUT.MIN_SIZE_TRAIN", "(160,)",
    "INPUT.MAX_SIZE_TRAIN", "256", "INPUT.RANDOM_FLIP", "none",
    "INPUT.MASK_FORMAT", "bitmask",  # the synthetic json mixes polygons and RLE
    "MODEL.ROI_MASKIOU_HEAD.CONV_DIM", "16", "MODEL.ROI_MASKIOU_HEAD.FC_DIM", "32",
]

# shrinks a Panoptic-DeepLab config the same way (no dilation, no crop); each config keeps its
# own norm, so the paper configs' SyncBN trains here in one CPU process
TINY_PANOPTIC_DEEPLAB = CPU + [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "32", "MODEL.RESNETS.RES5_DILATION", "1",
    "MODEL.RESNETS.RES5_MULTI_GRID", "[1, 1]",
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.HEAD_CHANNELS", "32", "MODEL.INS_EMBED_HEAD.ASPP_CHANNELS", "32",
    "MODEL.INS_EMBED_HEAD.CONVS_DIM", "16", "MODEL.INS_EMBED_HEAD.HEAD_CHANNELS", "16",
    "MODEL.PANOPTIC_DEEPLAB.SIZE_DIVISIBILITY", "32", "INPUT.CROP.ENABLED", "False",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192",
    "DATASETS.TRAIN", "('d2seg_synthetic_panoptic_train',)",
]
EXPECTED_LOSSES = {
    "PanopticDeepLab": {"loss_sem_seg", "loss_center", "loss_offset"},
    "GeneralizedRCNN": {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"},
}


def test_every_config_is_found():
    assert {"quickstart/mask_rcnn_R_18_FPN_synthetic.yaml",
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
            "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
            "Cityscapes/mask_rcnn_R_50_FPN.yaml"} <= set(CONFIGS)


def _training_split(cfg) -> str:
    """Synthetic data in the form the config's model trains on."""
    if cfg.MODEL.META_ARCHITECTURE == "PanopticDeepLab":
        return "d2seg_synthetic_panoptic_train"
    if "PanopticFPN" in cfg.MODEL.META_ARCHITECTURE:
        return "d2seg_synthetic_panoptic_train_separated"
    return "d2seg_synthetic_instance_train"


def _expected_losses(cfg) -> set[str]:
    meta_arch = cfg.MODEL.META_ARCHITECTURE
    if meta_arch == "PanopticDeepLab":
        return EXPECTED_LOSSES[meta_arch]
    expected = set(EXPECTED_LOSSES["GeneralizedRCNN"])
    if cfg.MODEL.ROI_HEADS.NAME == "MaskScoringROIHeads":
        expected.add("loss_maskiou")
    if "PanopticFPN" in meta_arch:
        expected.add("loss_sem_seg")
    return expected


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_config_trains_two_iterations_and_runs_inference(config, synthetic_root):
    """Each config, shrunk to an R-18 and small images: 2 training iterations, then inference
    with the config's own model."""
    full = load_config(str(CONFIG_ROOT / config), CPU)
    tiny = TINY_PANOPTIC_DEEPLAB if full.MODEL.META_ARCHITECTURE == "PanopticDeepLab" else (
        TINY_RCNN)
    cfg = load_config(str(CONFIG_ROOT / config), tiny)
    losses = _losses_over_training(cfg, _fixed_batch(cfg, _training_split(cfg)), iterations=2,
                                   keys=True)
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    assert set(losses[0]) == _expected_losses(cfg)

    model = build_model(full).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 96, 128) * 255, "height": 96, "width": 128}])
    assert "instances" in outputs[0]
    if "Panoptic" in full.MODEL.META_ARCHITECTURE:
        assert outputs[0]["sem_seg"].shape[-2:] == (96, 128)
        assert outputs[0]["panoptic_seg"][0].shape == (96, 128)
    if full.MODEL.ROI_HEADS.NAME == "MaskScoringROIHeads":
        assert outputs[0]["instances"].has("mask_scores")


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_BASE_: %s\nMODEL:\n  NOT_A_KEY: 1\n" % (CONFIG_ROOT / "Base-RCNN-FPN.yaml"))
    with pytest.raises(KeyError, match="MODEL.NOT_A_KEY") as error:
        load_config(str(bad))
    assert str(bad) in str(error.value)
    with pytest.raises(KeyError, match="SOLVER.NOT_A_KEY"):
        load_config(str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"), ["SOLVER.NOT_A_KEY", "1"])


def _fixed_batch(cfg, dataset_name, size=2):
    mapper = build_train_mapper(cfg)
    records = [r for r in DatasetCatalog.get(dataset_name)
               if r.get("annotations") or r.get("segments_info")][:size]
    return [mapper(r) for r in records]


def _losses_over_training(cfg, batch, iterations, keys=False):
    """Train on one fixed batch; the total loss per step (or each step's loss dict)."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    history = []
    with EventStorage(0):  # the R-CNN heads log training statistics into it
        for _ in range(iterations):
            losses = model(batch)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()} if keys else loss.item())
    return history


FAMILIES = {
    "mask_rcnn": ("quickstart/mask_rcnn_R_18_FPN_synthetic.yaml", None),
    "panoptic_fpn": ("quickstart/panoptic_fpn_R_18_synthetic.yaml", None),
    "cityscapes_mask_rcnn": ("Cityscapes/mask_rcnn_R_50_FPN.yaml", "cityscapes"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_lowers_total_loss(family, synthetic_root, request):
    config, data = FAMILIES[family]
    overrides = TINY_RCNN + ["SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "0"]
    cfg = load_config(str(CONFIG_ROOT / config), overrides)
    if data == "cityscapes":
        from d2seg.data.datasets.cityscapes import load_cityscapes_instances

        root = request.getfixturevalue("cityscapes_root")
        records = load_cityscapes_instances(str(root / "leftImg8bit" / "train"),
                                            str(root / "gtFine" / "train"))
        mapper = build_train_mapper(cfg)
        batch = [mapper(r) for r in records]
    else:
        batch = _fixed_batch(cfg, cfg.DATASETS.TRAIN[0])
    losses = _losses_over_training(cfg, batch, iterations=20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
