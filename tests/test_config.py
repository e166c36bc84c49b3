"""Every config loads through `load_config` and builds; each config family learns a fixed batch;
keys live with their components, and keys a model does not read, or old flat keys, fail at load."""

import ast
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

import d2seg
from d2seg import config as d2seg_config
from d2seg.config import (
    add_d2seg_config,
    config_components,
    flatten,
    load_config,
    register_config,
)
from d2seg.data import build_train_mapper
from tests.helpers.configs import (
    CONFIG_ROOT,
    CONFIGS,
    CPU,
    MODEL_CONFIGS,
    TINY_RCNN,
    fixed_batch,
    tiny_overrides,
    training_split,
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


def _expected_losses(cfg) -> set[str]:
    meta_arch = cfg.MODEL.META_ARCHITECTURE
    if meta_arch == "D2SegSemanticSegmentor" and cfg.MODEL.SEM_SEG_HEAD.NAME == "DAHead":
        return EXPECTED_LOSSES[meta_arch] | {"loss_sem_seg_pam", "loss_sem_seg_cam"}  # 3 losses
    if meta_arch == "D2SegSemanticSegmentor" and not cfg.MODEL.SEM_SEG_HEAD.AUX:
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
    cfg = load_config(str(CONFIG_ROOT / config), tiny_overrides(config))
    losses = _losses_over_training(
        cfg, fixed_batch(cfg, training_split(cfg)), iterations=2, keys=True
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
        batch = fixed_batch(cfg, cfg.DATASETS.TRAIN[0])
    losses = _losses_over_training(cfg, batch, iterations=20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


PSPNET = CONFIG_ROOT / "quickstart/pspnet_R_18_synthetic.yaml"


def _yaml(tmp_path, body: str, base: Path = PSPNET) -> Path:
    path = tmp_path / "leaf.yaml"
    path.write_text(f"_BASE_: {base}\n{body}")
    return path


@pytest.mark.parametrize(
    "old, new",
    [
        ("PSP_POOL_SCALES: [1, 2]", "MODEL.SEM_SEG_HEAD.PSP.POOL_SCALES"),
        ("ASPP_DILATIONS: [1, 2, 3]", "MODEL.SEM_SEG_HEAD.ASPP.DILATIONS"),
        ("C1_CHANNELS: 4", "MODEL.SEM_SEG_HEAD.DEEPLABV3PLUS.C1_CHANNELS"),
        ("LOSS_TOP_K: 0.5", "MODEL.SEM_SEG_HEAD.PANOPTIC_DEEPLAB.LOSS_TOP_K"),
        ("AUX_IN_FEATURE: res4", "MODEL.SEM_SEG_HEAD.AUX"),
    ],
)
def test_an_old_flat_key_names_its_new_key_and_the_file(tmp_path, old, new):
    leaf = _yaml(tmp_path, f"MODEL:\n  SEM_SEG_HEAD:\n    {old}\n")
    with pytest.raises(KeyError, match=f"was renamed to {re.escape(new)}") as error:
        load_config(str(leaf))
    assert str(leaf) in str(error.value)
    key, value = old.split(": ")
    with pytest.raises(KeyError, match=f"command-line overrides: .*renamed to {re.escape(new)}"):
        load_config(str(PSPNET), [f"MODEL.SEM_SEG_HEAD.{key}", value])


def test_the_aux_rename_error_shows_the_list_form(tmp_path):
    with pytest.raises(KeyError, match=r"AUX: \[\{IN_FEATURE: res4, CHANNELS: 256"):
        load_config(str(PSPNET), ["MODEL.SEM_SEG_HEAD.AUX_CHANNELS", "8"])


@pytest.mark.parametrize(
    "body, key, reason",
    [
        (
            "MODEL:\n  SEM_SEG_HEAD:\n    ASPP:\n      DILATIONS: [1, 2, 3]\n",
            "MODEL.SEM_SEG_HEAD.ASPP.DILATIONS",
            "NAME is 'PSPHead'; MODEL.SEM_SEG_HEAD.ASPP is read by ASPPHead, D2SegPanopticDeepLab",
        ),
        (
            "MODEL:\n  SEM_SEG_HEAD:\n    OCR:\n      CHANNELS: 8\n",
            "MODEL.SEM_SEG_HEAD.OCR.CHANNELS",
            "MODEL.SEM_SEG_HEAD.OCR is read by OCRHead",
        ),
        (
            "MODEL:\n  INS_EMBED_HEAD:\n    CONVS_DIM: 8\n",
            "MODEL.INS_EMBED_HEAD.CONVS_DIM",
            "META_ARCHITECTURE is 'D2SegSemanticSegmentor', not 'D2SegPanopticDeepLab'",
        ),
        (
            "MODEL:\n  TIMM:\n    NAME: resnet18\n",
            "MODEL.TIMM.NAME",
            "BACKBONE.NAME is 'build_d2seg_resnet_deeplab_backbone', not 'build_timm_backbone'",
        ),
    ],
)
def test_a_key_the_model_does_not_read_fails_naming_key_and_file(tmp_path, body, key, reason):
    leaf = _yaml(tmp_path, body)
    with pytest.raises(ValueError, match=re.escape(key)) as error:
        load_config(str(leaf))
    assert str(leaf) in str(error.value) and reason in str(error.value)


def test_an_unread_key_set_on_the_command_line_is_named_there():
    with pytest.raises(
        ValueError, match="command-line overrides: MODEL.SEM_SEG_HEAD.FCN.NUM_CONVS"
    ):
        load_config(str(PSPNET), ["MODEL.SEM_SEG_HEAD.FCN.NUM_CONVS", "1"])
    # choosing the head that reads the node makes the same key valid
    cfg = load_config(
        str(PSPNET), ["MODEL.SEM_SEG_HEAD.NAME", "FCNHead", "MODEL.SEM_SEG_HEAD.FCN.NUM_CONVS", "1"]
    )
    assert cfg.MODEL.SEM_SEG_HEAD.FCN.NUM_CONVS == 1


def test_every_sem_seg_head_node_is_read_by_a_registered_head():
    nodes = [c.paths[0] for c in config_components() if c.paths[0].count(".") == 2]
    read = {
        f"MODEL.SEM_SEG_HEAD.{node}"
        for _, head in SEM_SEG_HEADS_REGISTRY
        for node in getattr(head, "config_nodes", ())
    }
    sem_seg_nodes = {n for n in nodes if n.startswith("MODEL.SEM_SEG_HEAD.")}
    assert sem_seg_nodes == read
    assert {
        "PSP",
        "DANET",
        "CCNET",
        "ASPP",
        "ASPP_V2",
        "ANN",
        "DENSE_ASPP",
        "PSA",
        "ISA",
        "OCR",
    } <= {n.rsplit(".", 1)[1] for n in read}


def test_a_component_writing_outside_its_paths_is_refused(monkeypatch):
    def rogue(cfg):
        cfg.MODEL.ROGUE = CfgNode()
        cfg.MODEL.ROGUE.WIDTH = 8
        cfg.SOLVER.BASE_LR = 1.0  # another component's namespace

    monkeypatch.setattr(d2seg_config, "_COMPONENTS", list(config_components()))
    register_config("MODEL.ROGUE")(rogue)
    with pytest.raises(
        RuntimeError, match=r"owns \['MODEL.ROGUE'\] but wrote \['SOLVER.BASE_LR'\]"
    ):
        add_d2seg_config(get_cfg())
    with pytest.raises(ValueError, match="MODEL.ROGUE is owned by .*rogue already"):
        register_config("MODEL.ROGUE")(rogue)


def _names_read_in(path: Path) -> set[str]:
    """Attribute names read (not assigned), and string subscripts / getattr names, in a file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names.add(node.attr)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            names.add(str(node.slice.value))
    return names


def test_every_d2seg_key_is_read_by_some_code():
    """No key is declared that nothing reads (the key's name is read as an attribute in a
    module of d2seg other than config.py)."""
    package = Path(d2seg.__file__).parent
    read = set().union(*(_names_read_in(p) for p in package.rglob("*.py") if p.name != "config.py"))
    detectron2_keys = dict(flatten(get_cfg()))
    ours = [k for k, _ in flatten(add_d2seg_config(get_cfg())) if k not in detectron2_keys]
    unread = [k for k in ours if k.rsplit(".", 1)[1] not in read]
    assert not unread
