"""`benchmarks/inference_speed.py` runs on CPU for a semantic, an R-CNN (fixed detections) and a
Panoptic-DeepLab config (beside Detectron2's project) and writes sane figures. No timing is
asserted."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.configs import (
    CONFIG_ROOT,
    TINY_PANOPTIC_DEEPLAB,
    TINY_RCNN,
    tiny_sem_seg_overrides,
)
from tests.helpers.scripts import load_script

SEM_SEG = "Cityscapes-SemanticSegmentation/pspnet_R_50_D8_512x1024_80k.yaml"
RCNN = "COCO-InstanceSegmentation/mask_scoring_rcnn_R_50_FPN_1x.yaml"
PANOPTIC_DEEPLAB = (
    "Cityscapes-PanopticSegmentation/"
    "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml"
)
# Detectron2's DeepLab backbone has no R-18: a slim R-50 instead, and few centres
SLIM_R50 = [
    "MODEL.RESNETS.DEPTH",
    "50",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "16",
    "MODEL.RESNETS.RES5_MULTI_GRID",
    "[1, 1, 1]",
    "MODEL.PANOPTIC_DEEPLAB.TOP_K_INSTANCE",
    "8",
]
SHORT = ["--device", "cpu", "--warmup", "0", "--repeats", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def speed_script():
    return load_script("benchmarks/inference_speed.py")


def check_figures(result: dict) -> None:
    ms = result["ms_per_image"]
    assert 0 < ms["min"] <= ms["q1"] <= ms["median"] <= ms["q3"] <= ms["max"]
    assert result["images_per_s"] == pytest.approx(1000 / ms["median"])
    assert result["gflops_per_image"] > 0
    assert result["peak_memory_mib"] is not None and result["peak_memory_mib"] >= 0
    assert result["output_dtypes"] == ["torch.float32"]


def test_semantic_config_with_bf16_channels_last_and_a_batch(speed_script, tmp_path):
    path = tmp_path / "sem_seg.json"
    report = speed_script.main(
        ["--config-file", str(CONFIG_ROOT / SEM_SEG), *SHORT, "--amp", "bf16", "--channels-last"]
        + ["--batch", "2", "--height", "64", "--width", "96", "--json", str(path)]
        + tiny_sem_seg_overrides(SEM_SEG)
    )
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert (report["amp"], report["channels_last"], report["batch"]) == ("bfloat16", True, 2)
    assert list(report["models"]) == ["d2seg"]
    check_figures(report["models"]["d2seg"])


def test_rcnn_config_with_fixed_detections(speed_script):
    report = speed_script.main(
        ["--config-file", str(CONFIG_ROOT / RCNN), *SHORT, "--detections", "2"]
        + ["--height", "96", "--width", "128"]
        + TINY_RCNN
    )
    check_figures(report["models"]["d2seg"])
    assert report["detections"] == 2


def test_given_detections_reach_the_mask_and_maskiou_heads(speed_script):
    from detectron2.modeling import build_model

    from d2seg.config import load_config

    model = build_model(load_config(str(CONFIG_ROOT / RCNN), TINY_RCNN)).eval()
    inputs = speed_script.random_inputs(2, 96, 128)
    with torch.no_grad():
        outputs = speed_script.GivenDetectionsRCNN(model, 3)(inputs)
    for output in outputs:
        instances = output["instances"]
        assert len(instances) == 3
        assert instances.pred_masks.shape == (3, 96, 128)
        assert instances.mask_scores.shape == (3,)


def test_panoptic_deeplab_beside_detectron2_project(speed_script):
    report = speed_script.main(
        ["--config-file", str(CONFIG_ROOT / PANOPTIC_DEEPLAB), *SHORT]
        + ["--height", "64", "--width", "128"]
        + TINY_PANOPTIC_DEEPLAB
        + SLIM_R50
    )
    assert list(report["models"]) == ["d2seg", "detectron2_project"]
    assert report["weights"].startswith("random, the project's loaded")
    for result in report["models"].values():
        check_figures(result)
    d2seg, project = (report["models"][k] for k in ("d2seg", "detectron2_project"))
    assert d2seg["gflops_per_image"] == pytest.approx(project["gflops_per_image"], rel=0.01)
    ratio = d2seg["ms_per_image"]["median"] / project["ms_per_image"]["median"]
    assert report["ratio_d2seg_over_project"] == pytest.approx(ratio)
