"""Parsing R-CNN test-time augmentation: a mirror-consistent model is unchanged by flip TTA,
left/right parts land back in their own channels and places, scales are averaged with equal
weight, and a real model runs through the wrapper the trainer builds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.structures import Boxes, Instances
from torchvision.ops import roi_align

from d2seg.config import load_config
from d2seg.modeling.postprocessing.parsing import PartProbabilities
from d2seg.modeling.test_time_augmentation import (
    ParsingRCNNWithTTA,
    build_rcnn_tta,
    part_flip_order,
)
from tests.helpers.configs import CONFIG_ROOT, TINY_RCNN

QUICKSTART = str(CONFIG_ROOT / "quickstart/parsing_rcnn_R_18_FPN_synthetic.yaml")
CIHP_FLIP_PAIRS = [(14, 15), (16, 17), (18, 19)]  # d2seg/data/datasets/human_parsing.py
LEFT_ARM, RIGHT_ARM, UPPER_CLOTHES = 14, 15, 5  # CIHP part ids
NUM_PARTS, GRID = 20, 8  # part classes; side of the stub's probability grid
HEIGHT, WIDTH = 64, 96
PERSON_BOX = (24, 8, 56, 56)  # 32 x 48 px: each grid cell covers 4 x 6 whole pixels


def _tta_config(min_sizes: str = f"({HEIGHT},)", flip: bool = True):
    return load_config(
        QUICKSTART,
        TINY_RCNN
        + ["TEST.AUG.MIN_SIZES", min_sizes, "TEST.AUG.MAX_SIZE", "1000"]
        + ["TEST.AUG.FLIP", str(flip)],
    )


class MirrorConsistentStub(GeneralizedRCNN):
    """A GeneralizedRCNN whose inference reads the image directly. Boxes: the bounding box of
    the pixels > 127 in channel 0 (score 0.9). Parts, on a GRID x GRID grid over each given
    box (RoIAlign, one centred sample per cell): a cell > 127 in channel 1 is the left arm in
    the box's left half and the right arm in its right half, one > 127 in channel 2 upper
    clothes, any other background. A mirrored image thus gets the mirrored prediction with the
    arms swapped, as a perfectly trained model's would."""

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        assert not do_postprocess
        results = []
        for index, item in enumerate(batched_inputs):
            image = item["image"].float()
            size = tuple(image.shape[1:])
            if detected_instances is None:
                ys, xs = torch.nonzero(image[0] > 127, as_tuple=True)
                box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]).float()
                results.append(
                    Instances(
                        size,
                        pred_boxes=Boxes(box),
                        scores=torch.tensor([0.9]),
                        pred_classes=torch.zeros(1, dtype=torch.long),
                    )
                )
                continue
            instances = detected_instances[index]
            probabilities = self.part_probabilities(image, instances.pred_boxes.tensor)
            instances.pred_parsing = PartProbabilities(probabilities)
            instances.parsing_scores = instances.scores.clone()
            results.append(instances)
        return results

    @staticmethod
    def part_probabilities(image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        cells = roi_align(image[None, 1:], [boxes.float()], GRID, 1.0, 1, aligned=True) > 127
        labels = torch.zeros((len(boxes), GRID, GRID), dtype=torch.long)
        left_half = torch.arange(GRID) < GRID // 2
        labels[cells[:, 0] & left_half] = LEFT_ARM
        labels[cells[:, 0] & ~left_half] = RIGHT_ARM
        labels[cells[:, 1]] = UPPER_CLOTHES
        one_hot = F.one_hot(labels, NUM_PARTS).permute(0, 3, 1, 2).float()
        return 0.9 * one_hot + 0.1 / NUM_PARTS


class ImageSizeStub(GeneralizedRCNN):
    """Detects one fixed box; its part-1 probability and parsing score scale with the height of
    the (resized) image, so averaging over scales is visible."""

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        results = []
        for index, item in enumerate(batched_inputs):
            height, width = item["image"].shape[1:]
            if detected_instances is None:
                box = torch.tensor([PERSON_BOX]).float() * height / HEIGHT
                results.append(
                    Instances(
                        (height, width),
                        pred_boxes=Boxes(box),
                        scores=torch.tensor([0.8]),
                        pred_classes=torch.zeros(1, dtype=torch.long),
                    )
                )
                continue
            instances = detected_instances[index]
            probabilities = torch.zeros((len(instances), NUM_PARTS, GRID, GRID))
            probabilities[:, 1] = height / 256
            probabilities[:, 0] = 1 - height / 256
            instances.pred_parsing = PartProbabilities(probabilities)
            instances.parsing_scores = instances.scores * height / 256
            results.append(instances)
        return results


def _person_image(generator: torch.Generator | None = None, left_arm_only: bool = False):
    """A (3, H, W) uint8 image: channel 0 marks the person box, channels 1 and 2 whole grid
    cells of it (random ones, or only the box's left-upper quarter in channel 1)."""
    x0, y0, x1, y1 = PERSON_BOX
    cell_w, cell_h = (x1 - x0) // GRID, (y1 - y0) // GRID
    if left_arm_only:
        cells = torch.zeros((2, GRID, GRID), dtype=torch.bool)
        cells[0, : GRID // 2, : GRID // 2] = True
    else:
        cells = torch.rand((2, GRID, GRID), generator=generator) < 0.3
    image = torch.zeros((3, HEIGHT, WIDTH), dtype=torch.uint8)
    image[0, y0:y1, x0:x1] = 255
    pixels = cells.repeat_interleave(cell_h, dim=1).repeat_interleave(cell_w, dim=2)
    image[1:, y0:y1, x0:x1] = pixels.to(torch.uint8) * 255
    return image


def _tta_instances(model_class, image, **config):
    cfg = _tta_config(**config)
    model = model_class(cfg).eval()
    tta = ParsingRCNNWithTTA(cfg, model, CIHP_FLIP_PAIRS)
    with torch.no_grad():
        return tta([{"image": image, "height": HEIGHT, "width": WIDTH}])[0]["instances"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flip_tta_of_a_mirror_consistent_model_equals_the_plain_prediction(seed):
    image = _person_image(torch.Generator().manual_seed(seed))
    plain = MirrorConsistentStub.part_probabilities(image.float(), torch.tensor([PERSON_BOX]))
    assert (plain.argmax(1) == LEFT_ARM).any() and (plain.argmax(1) == RIGHT_ARM).any()
    out = _tta_instances(MirrorConsistentStub, image)
    assert out.pred_boxes.tensor.tolist() == [list(map(float, PERSON_BOX))]
    torch.testing.assert_close(out.pred_parsing.tensor, plain)
    torch.testing.assert_close(out.parsing_scores, torch.tensor([0.9]))


def test_flip_tta_puts_the_left_arm_back_in_its_channel_and_place():
    out = _tta_instances(MirrorConsistentStub, _person_image(left_arm_only=True))
    probabilities = out.pred_parsing.tensor[0]
    quarter = (slice(0, GRID // 2), slice(0, GRID // 2))
    expected = torch.full((GRID // 2, GRID // 2), 0.9 + 0.1 / NUM_PARTS)
    torch.testing.assert_close(probabilities[LEFT_ARM][quarter], expected)
    assert probabilities[RIGHT_ARM].max() == pytest.approx(0.1 / NUM_PARTS)
    (crop,) = out.pred_parsing.label_crops(out.pred_boxes.tensor, out.image_size)
    x0, y0, x1, y1 = PERSON_BOX
    left_upper = crop.labels[y0 - crop.y0 + 2 : (y0 + y1) // 2 - crop.y0 - 2]
    left_upper = left_upper[:, x0 - crop.x0 + 2 : (x0 + x1) // 2 - crop.x0 - 2]
    assert (left_upper == LEFT_ARM).all()
    assert not (crop.labels == RIGHT_ARM).any()


def test_scales_are_averaged_with_equal_weight():
    out = _tta_instances(ImageSizeStub, _person_image(), min_sizes="(64, 128, 192)", flip=False)
    expected_part = (64 + 128 + 192) / 3 / 256
    torch.testing.assert_close(
        out.pred_parsing.tensor[0, 1], torch.full((GRID, GRID), expected_part)
    )
    torch.testing.assert_close(out.parsing_scores, torch.tensor([0.8 * expected_part]))
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([PERSON_BOX]).float())


def test_part_flip_order_swaps_pairs_and_checks_them():
    order = part_flip_order(CIHP_FLIP_PAIRS, NUM_PARTS).tolist()
    assert order == list(range(14)) + [15, 14, 17, 16, 19, 18]
    with pytest.raises(ValueError, match="part id >= the model's 16 parts"):
        part_flip_order(CIHP_FLIP_PAIRS, 16)  # (16, 17) and (18, 19) are beyond it


def test_a_real_parsing_rcnn_runs_through_the_trainers_wrapper():
    cfg = _tta_config(min_sizes="(64, 96)")
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # an untrained model still yields detections
    cfg.TEST.DETECTIONS_PER_IMAGE = 3
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tta = build_rcnn_tta(cfg, model)
    assert isinstance(tta, ParsingRCNNWithTTA)
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    parsed_rois = []
    model.roi_heads.parsing_head.register_forward_hook(
        lambda module, args, output: parsed_rois.append(len(args[0]))
    )
    with torch.no_grad():
        out = tta([{"image": image, "height": 2 * HEIGHT, "width": 2 * WIDTH}])[0]["instances"]
    assert sum(parsed_rois) == 4 * 3  # 2 sizes x 2 flips, the merged boxes only
    side = cfg.MODEL.ROI_PARSING_HEAD.RESOLUTION
    assert len(out) == 3 and out.image_size == (2 * HEIGHT, 2 * WIDTH)
    assert out.pred_parsing.tensor.shape == (3, NUM_PARTS, side, side)
    torch.testing.assert_close(out.pred_parsing.tensor.sum(1), torch.ones(3, side, side))
    torch.testing.assert_close(out.parsing_scores, out.scores)
    assert model.roi_heads.parsing_on  # switched back on after the box pass
