"""Every config loads through `load_config` and builds; each config family learns a fixed batch."""

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from tests.helpers.configs import (
    CONFIG_ROOT,
    CONFIGS,
    CPU,
    MODEL_CONFIGS,
    TINY_PANOPTIC_DEEPLAB,
    TINY_RCNN,
    TINY_SEM_SEG,
    TINY_TIMM,
)

EXPECTED_LOSSES = {
    "D2SegSemanticSegmentor": {"loss_sem_seg", "loss_sem_seg_aux"},
    "D2SegPanopticDeepLab": {"loss_sem_seg", "loss_center", "loss_offset"},
    "GeneralizedRCNN": {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"},
}


def test_every_config_is_found():
    assert {
        "quickstart/mask_rcnn_R_18_FPN_synthetic.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
        "Cityscapes/mask_rcnn_R_50_FPN.yaml",
    } <= set(CONFIGS)


def _training_split(cfg) -> str:
    """Synthetic data in the form the config's model trains on."""
    if cfg.MODEL.META_ARCHITECTURE == "D2SegPanopticDeepLab":
        return "d2seg_synthetic_panoptic_train"
    if cfg.MODEL.META_ARCHITECTURE == "D2SegSemanticSegmentor":
        return "d2seg_synthetic_sem_seg_train"
    if "PanopticFPN" in cfg.MODEL.META_ARCHITECTURE:
        return "d2seg_synthetic_panoptic_train_separated"
    if cfg.MODEL.ROI_HEADS.NAME == "ParsingROIHeads":
        return "d2seg_synthetic_parsing_train"
    return "d2seg_synthetic_instance_train"


def _expected_losses(cfg) -> set[str]:
    meta_arch = cfg.MODEL.META_ARCHITECTURE
    if meta_arch == "D2SegSemanticSegmentor" and cfg.MODEL.SEM_SEG_HEAD.NAME == "DAHead":
        return EXPECTED_LOSSES[meta_arch] | {"loss_sem_seg_pam", "loss_sem_seg_cam"}  # 3 losses
    if meta_arch == "D2SegSemanticSegmentor" and not cfg.MODEL.SEM_SEG_HEAD.AUX_IN_FEATURE:
        return {"loss_sem_seg"}  # LR-ASPP: no auxiliary head
    if meta_arch in ("D2SegPanopticDeepLab", "D2SegSemanticSegmentor"):
        return EXPECTED_LOSSES[meta_arch]
    expected = set(EXPECTED_LOSSES["GeneralizedRCNN"])
    if cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads":  # one box loss pair per stage
        expected -= {"loss_cls", "loss_box_reg"}
        expected |= {
            f"{name}_stage{stage}"
            for name in ("loss_cls", "loss_box_reg")
            for stage in range(len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS))
        }
    if cfg.MODEL.ROI_MASK_HEAD.NAME == "MaskScoringConvUpsampleHead":
        expected.add("loss_maskiou")
    if "PanopticFPN" in meta_arch:
        expected.add("loss_sem_seg")
    if not cfg.MODEL.MASK_ON:  # Parsing R-CNN: person boxes + parts, masks optional
        expected.discard("loss_mask")
    if cfg.MODEL.PARSING_ON:
        expected.add("loss_parsing")
    if cfg.MODEL.PARSINGIOU_ON:
        expected.add("loss_parsingiou")
    return expected


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_config_trains_two_iterations_and_runs_inference(config, synthetic_root):
    """Each config, shrunk to an R-18 and small images: 2 training iterations, then inference
    with the config's own model."""
    full = load_config(str(CONFIG_ROOT / config), CPU)
    if full.MODEL.BACKBONE.NAME == "build_timm_backbone":
        pytest.importorskip("timm", reason="timm backbones need timm (pip install 'd2seg[timm]')")
    tiny = {
        "D2SegPanopticDeepLab": TINY_PANOPTIC_DEEPLAB,
        "D2SegSemanticSegmentor": TINY_SEM_SEG,
    }.get(full.MODEL.META_ARCHITECTURE, TINY_RCNN)
    cfg = load_config(str(CONFIG_ROOT / config), tiny + TINY_TIMM.get(config, []))
    losses = _losses_over_training(
        cfg, _fixed_batch(cfg, _training_split(cfg)), iterations=2, keys=True
    )
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    assert set(losses[0]) == _expected_losses(cfg)

    if full.MODEL.PARSING_ON:  # the paper's GCE head costs ~13 GMACs per detection
        full = load_config(str(CONFIG_ROOT / config), CPU + ["TEST.DETECTIONS_PER_IMAGE", "2"])
    model = build_model(full).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 96, 128) * 255, "height": 96, "width": 128}])
    if full.MODEL.META_ARCHITECTURE == "D2SegSemanticSegmentor":
        assert outputs[0]["sem_seg"].shape == (full.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 96, 128)
        return
    assert "instances" in outputs[0]
    if "Panoptic" in full.MODEL.META_ARCHITECTURE:
        assert outputs[0]["sem_seg"].shape[-2:] == (96, 128)
        assert outputs[0]["panoptic_seg"][0].shape == (96, 128)
    if full.MODEL.ROI_MASK_HEAD.NAME == "MaskScoringConvUpsampleHead":
        assert outputs[0]["instances"].has("mask_scores")
    if full.MODEL.PARSING_ON:
        assert outputs[0]["instances"].has("pred_parsing")


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
    records = [
        r
        for r in DatasetCatalog.get(dataset_name)
        if r.get("annotations") or r.get("segments_info") or r.get("sem_seg_file_name")
    ][:size]
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
        records = load_cityscapes_instances(
            str(root / "leftImg8bit" / "train"), str(root / "gtFine" / "train")
        )
        mapper = build_train_mapper(cfg)
        batch = [mapper(r) for r in records]
    else:
        batch = _fixed_batch(cfg, cfg.DATASETS.TRAIN[0])
    losses = _losses_over_training(cfg, batch, iterations=20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
