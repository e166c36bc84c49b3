"""d2seg.utils.visualizer on fabricated outputs of every model kind: panels, legends, labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils.colormap import colormap

from d2seg.modeling.postprocessing.parsing import PartProbabilities
from d2seg.utils.visualizer import (
    _text_metrics,
    draw_legend,
    draw_parsing,
    draw_predictions,
    instance_labels,
    legend_width,
    panoptic_legend,
    with_colors,
)

H, W = 96, 64  # tall enough for a legend of 4 rows (18 px each at 96 px)
GREY = np.full((H, W, 3), 100, dtype=np.uint8)
CLASSES = ["circle", "triangle", "square", "sky", "grass", "sand"]
COLORS = [
    [220, 50, 50],
    [40, 190, 60],
    [50, 80, 230],
    [170, 190, 205],
    [110, 135, 80],
    [195, 175, 130],
]
# Panoptic-DeepLab's metadata: one contiguous id space, things 0-2, stuff 3-5
UNIFIED = Metadata(
    name="_test_vis_unified",
    thing_classes=CLASSES,
    stuff_classes=CLASSES,
    thing_colors=COLORS,
    stuff_colors=COLORS,
    thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
    label_divisor=1000,
)
# PanopticFPN's "separated" metadata: things and stuff counted apart, stuff 0 = "things"
SEPARATED = Metadata(
    name="_test_vis_separated",
    thing_classes=CLASSES[:3],
    thing_colors=COLORS[:3],
    stuff_classes=["things", *CLASSES[3:]],
    stuff_colors=[[82, 18, 128], *COLORS[3:]],
)
PARTS = ["background", "hat", "hair", "face"]
PART_COLORS = [[1, 2, 3], [255, 0, 0], [0, 0, 255], [0, 255, 0]]  # background unlike text
PERSON = Metadata(
    name="_test_vis_person",
    thing_classes=["person"],
    thing_colors=[[220, 20, 60]],
    parsing_classes=PARTS,
    parsing_colors=PART_COLORS,
)


def _instances(n: int = 2, **fields) -> Instances:
    boxes = torch.tensor([[4.0, 4, 30, 30], [30, 10, 60, 44]])[:n]
    masks = torch.zeros(n, H, W, dtype=torch.bool)
    masks[0, 6:28, 6:28] = True
    return Instances(
        (H, W),
        pred_boxes=Boxes(boxes),
        pred_masks=masks,
        pred_classes=torch.tensor([0, 2])[:n],
        scores=torch.tensor([0.93, 0.6])[:n],
        **fields,
    )


def _legend_rows(legend: np.ndarray, color: list[int]) -> np.ndarray:
    """Rows of a legend where `color` appears exactly (its swatch)."""
    return np.flatnonzero((legend == np.asarray(color, dtype=np.uint8)).all(axis=2).any(axis=1))


def _assert_legend(legend: np.ndarray, shown: list[list[int]], hidden: list[list[int]]) -> None:
    """`shown` colours are swatched top to bottom in this order; `hidden` ones are absent."""
    tops = [_legend_rows(legend, color) for color in shown]
    assert all(len(rows) for rows in tops), "a class present has no swatch"
    assert [rows[0] for rows in tops] == sorted(rows[0] for rows in tops)
    assert not any(len(_legend_rows(legend, color)) for color in hidden)


def test_instance_labels_show_mask_and_parsing_scores():
    instances = _instances(mask_scores=torch.tensor([0.81, 0.456]))
    assert instance_labels(instances, CLASSES) == [
        "circle 0.93 (mask 0.81)",
        "square 0.60 (mask 0.46)",
    ]
    assert instance_labels(_instances(), CLASSES) == ["circle 0.93", "square 0.60"]
    assert instance_labels(_instances(), ["circle"]) == ["circle 0.93", "class 2 0.60"]
    assert instance_labels(_instances(), None) == ["class 0 0.93", "class 2 0.60"]
    parsing = _instances(1, parsing_scores=torch.tensor([0.7]))
    assert instance_labels(parsing, ["person"]) == ["person 0.93 (parsing 0.70)"]


def test_instances_alone_draw_one_panel_without_legend_threshold_inclusive():
    instances = _instances(mask_scores=torch.tensor([0.81, 0.5]))
    drawn = draw_predictions(GREY, {"instances": instances}, SEPARATED, score_threshold=0.93)
    assert drawn.shape == (H, W, 3)
    assert (drawn[15, 15] != 100).any()  # the 0.93 instance is drawn (score == threshold)
    assert (drawn[15, 50] == 100).all()  # the 0.6 one is not (its box interior)
    above = draw_predictions(GREY, {"instances": instances}, SEPARATED, score_threshold=0.931)
    assert (above[15, 15] == 100).all()


def _brute_force_panoptic(panoptic: np.ndarray, category_of: dict, metadata: Metadata) -> list:
    """Classes present, largest total area first, named and coloured as the test expects."""
    areas: dict = {}
    for segment in np.unique(panoptic):
        if int(segment) in category_of:
            key = category_of[int(segment)]
            areas[key] = areas.get(key, 0) + int((panoptic == segment).sum())
    expected = []
    for category, isthing in sorted(areas, key=lambda key: -areas[key]):
        kind = "thing" if isthing else "stuff"
        expected.append(
            (
                metadata.get(f"{kind}_classes")[category],
                list(metadata.get(f"{kind}_colors")[category]),
            )
        )
    return expected


def test_panoptic_legend_label_divisor_form():
    panoptic = torch.full((H, W), 4000, dtype=torch.int32)  # grass (stuff 4), largest
    panoptic[:20, :30] = 1  # circle #1
    panoptic[20:30, :30] = 2  # circle #2: circles together outrank sky
    panoptic[60:, :20] = 3000  # sky
    panoptic[80:, 40:] = -1  # VOID, never listed
    panoptic[:5, 50:] = 2001  # square
    category_of = {1: (0, True), 2: (0, True), 3000: (3, False), 4000: (4, False), 2001: (2, True)}
    expected = _brute_force_panoptic(panoptic.numpy(), category_of, UNIFIED)
    assert panoptic_legend(panoptic, None, UNIFIED) == expected
    assert [name for name, _ in expected] == ["grass", "circle", "sky", "square"]


def test_panoptic_legend_segments_info_form_skips_unlabelled_pixels():
    panoptic = torch.zeros((H, W), dtype=torch.int32)  # 0: PanopticFPN's unlabelled pixels
    panoptic[:10] = 1
    panoptic[10:20, :40] = 2
    panoptic[30:, :] = 3
    segments_info = [
        {"id": 1, "category_id": 2, "isthing": True},
        {"id": 2, "category_id": 2, "isthing": False},  # stuff 2 = grass here
        {"id": 3, "category_id": 1, "isthing": False},  # sky
    ]
    category_of = {s["id"]: (s["category_id"], s["isthing"]) for s in segments_info}
    expected = _brute_force_panoptic(panoptic.numpy(), category_of, SEPARATED)
    assert panoptic_legend(panoptic, segments_info, SEPARATED) == expected
    assert [name for name, _ in expected] == ["sky", "square", "grass"]


def test_panoptic_model_draws_panoptic_instances_and_semantic_panels_with_legends():
    panoptic = torch.full((H, W), 3000, dtype=torch.int32)
    panoptic[10:30, 10:30] = 1
    sem_seg = torch.zeros(6, H, W)
    sem_seg[5, :, :40] = 1  # sand, the largest
    sem_seg[1, :, 40:] = 2  # triangle
    outputs = {"panoptic_seg": (panoptic, None), "instances": _instances(), "sem_seg": sem_seg}
    drawn = draw_predictions(GREY, outputs, UNIFIED)
    panoptic_width = legend_width(H, "panoptic", CLASSES + CLASSES)
    semantic_width = legend_width(H, "semantic", CLASSES)
    assert drawn.shape == (H, 3 * W + panoptic_width + semantic_width, 3)
    panoptic_legend_image = drawn[:, W : W + panoptic_width]
    _assert_legend(panoptic_legend_image, [COLORS[3], COLORS[0]], [COLORS[4], COLORS[5]])
    semantic_legend_image = drawn[:, -semantic_width:]
    _assert_legend(semantic_legend_image, [COLORS[5], COLORS[1]], [COLORS[3], COLORS[0]])


def test_semantic_legend_leaves_out_classes_the_metadata_does_not_name():
    sem_seg = torch.zeros(7, H, W)
    sem_seg[6, :30] = 1  # a seventh class, beyond stuff_classes: drawn by nobody
    sem_seg[4, 30:] = 1
    metadata = Metadata(name="_test_vis_sem", stuff_classes=CLASSES, stuff_colors=COLORS)
    drawn = draw_predictions(GREY, {"sem_seg": sem_seg}, metadata)
    width = legend_width(H, "semantic", CLASSES)
    assert drawn.shape == (H, W + width, 3)
    _assert_legend(drawn[:, W:], [COLORS[4]], [COLORS[0]])
    with pytest.raises(KeyError, match="stuff_classes"):
        draw_predictions(GREY, {"sem_seg": sem_seg}, Metadata(name="_test_vis_nameless"))


def _parsing_instances(with_masks: bool) -> Instances:
    one_hot = torch.zeros(1, 4, 8, 8)
    one_hot[0, 1, :4] = 1  # hat on the upper half, hair on the lower half, no face
    one_hot[0, 2, 4:] = 1
    fields = {"pred_masks": torch.ones(1, H, W, dtype=torch.bool)} if with_masks else {}
    return Instances(
        (H, W),
        pred_parsing=PartProbabilities(one_hot),
        pred_boxes=Boxes(torch.tensor([[8.0, 4, 40, 44]])),
        pred_classes=torch.zeros(1, dtype=torch.long),
        scores=torch.tensor([0.9]),
        parsing_scores=torch.tensor([0.8]),
        **fields,
    )


def test_parsing_panel_is_draw_parsing_plus_a_part_legend():
    instances = _parsing_instances(with_masks=False)
    drawn = draw_predictions(GREY, {"instances": instances}, PERSON)
    width = legend_width(H, "parts", PARTS)
    assert drawn.shape == (H, W + width, 3)
    np.testing.assert_array_equal(drawn[:, :W], draw_parsing(GREY, instances, PERSON))
    _assert_legend(drawn[:, W:], [PART_COLORS[1], PART_COLORS[2]], [PART_COLORS[0], PART_COLORS[3]])
    blended = np.round(0.4 * 100 + 0.6 * np.array(PART_COLORS[1]))  # alpha 0.6
    np.testing.assert_array_equal(drawn[20, 24], blended)
    # parsing_scores, not scores, meet the threshold
    nothing = draw_predictions(GREY, {"instances": instances}, PERSON, score_threshold=0.85)
    assert (nothing[:, :W] == 100).all()
    # a parsing model with a mask branch also gets the instance panel
    both = draw_predictions(GREY, {"instances": _parsing_instances(with_masks=True)}, PERSON)
    assert both.shape == (H, 2 * W + width, 3)


def test_with_colors_fills_only_missing_colours_from_detectron2_colormap():
    metadata = Metadata(
        name="_test_vis_colours", thing_classes=["a", "b", "c"], thing_colors=[[1, 2, 3]]
    )
    filled = with_colors(metadata)
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    assert filled.thing_colors == [[1, 2, 3], palette[1], palette[2]]
    assert filled.thing_classes == ["a", "b", "c"] and metadata.thing_colors == [[1, 2, 3]]
    assert with_colors(UNIFIED) is UNIFIED


def test_legend_sums_up_rows_that_do_not_fit():
    row = _text_metrics(H)[2]
    entries = [(name, color) for name, color in zip(CLASSES, COLORS)]
    legend = draw_legend(3 * row, 100, "panoptic", entries)  # title + 2 rows: 1 entry + "+5"
    _assert_legend(legend, [COLORS[0]], COLORS[1:])
    fits = draw_legend(7 * row, 100, "panoptic", entries)  # title + 6 rows: all
    _assert_legend(fits, COLORS, [])
    one_short = draw_legend(7 * row - 1, 100, "panoptic", entries)
    _assert_legend(one_short, COLORS[:4], COLORS[4:])
