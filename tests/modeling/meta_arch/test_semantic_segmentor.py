"""D2SegSemanticSegmentor: whole-image, sliding-window and test-time-augmented inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from d2seg.modeling.meta_arch.semantic_segmentor import sliding_windows
from tests.helpers.sem_seg_heads import (
    tiny_model_cfg,
)


@pytest.mark.parametrize("meta_arch", ["SemanticSegmentor", "D2SegSemanticSegmentor"])
def test_models_output_class_maps_at_the_requested_resolution(meta_arch):
    model = build_model(tiny_model_cfg(opts=["MODEL.META_ARCHITECTURE", meta_arch])).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 70, 90) * 255, "height": 35, "width": 45}])
    assert outputs[0]["sem_seg"].shape == (6, 35, 45)


def test_sliding_windows_follow_mmsegmentation():
    # Cityscapes 1024 x 2048, crop 769, stride 513: 2 rows x 4 columns, the last ones shifted
    windows = sliding_windows(1024, 2048, (769, 769), (513, 513))
    assert sorted({(y1, y2) for y1, y2, _, _ in windows}) == [(0, 769), (255, 1024)]
    assert sorted({(x1, x2) for _, _, x1, x2 in windows}) == [
        (0, 769),
        (513, 1282),
        (1026, 1795),
        (1279, 2048),
    ]
    assert sliding_windows(50, 60, (64, 64), (32, 32)) == [(0, 50, 0, 60)]


def _model(opts=()):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg(opts=opts)).eval()
    for module in model.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_slide_equals_whole_when_the_window_covers_the_image():
    image = torch.randn(1, 3, 64, 96)
    whole = _model(["TEST.SEM_SEG.MODE", "whole"])
    slide = _model(["TEST.SEM_SEG.MODE", "slide", "TEST.SEM_SEG.CROP_SIZE", "[64, 96]"])
    with torch.no_grad():
        torch.testing.assert_close(slide.inference(image), whole.inference(image))


def test_slide_averages_the_logits_of_overlapping_windows():
    image = torch.randn(1, 3, 64, 96)
    model = _model(
        [
            "TEST.SEM_SEG.MODE",
            "slide",
            "TEST.SEM_SEG.CROP_SIZE",
            "[64, 64]",
            "TEST.SEM_SEG.STRIDE",
            "[32, 32]",
        ]
    )
    with torch.no_grad():
        left, right = model.whole(image[..., :64]), model.whole(image[..., 32:])
        expected = torch.cat(
            [left[..., :32], (left[..., 32:] + right[..., :32]) / 2, right[..., 32:]], dim=-1
        )
        torch.testing.assert_close(model.slide(image), expected)


def test_flip_tta_on_a_symmetric_input_is_symmetric_and_averages_probabilities():
    half = torch.randn(1, 3, 64, 48)
    image = torch.cat([half, half.flip(-1)], dim=-1)
    model = _model(["TEST.SEM_SEG.FLIP", "True", "TEST.SEM_SEG.SCALES", "[0.75, 1.0]"])
    with torch.no_grad():
        probs = model.inference(image)
        torch.testing.assert_close(probs, probs.flip(-1))
        plain = _model()
        expected = torch.zeros_like(probs)
        for scale in (0.75, 1.0):
            x = F.interpolate(image, scale_factor=scale, mode="bilinear") if scale != 1 else image
            for flip in (False, True):
                logits = plain.whole(x.flip(-1) if flip else x)
                logits = logits.flip(-1) if flip else logits
                expected += F.interpolate(logits, (64, 96), mode="bilinear").softmax(1) / 4
        torch.testing.assert_close(probs, expected)


def test_bad_inference_settings_are_named():
    with pytest.raises(ValueError, match="TEST.SEM_SEG.MODE 'tiles'"):
        _model(["TEST.SEM_SEG.MODE", "tiles"])
