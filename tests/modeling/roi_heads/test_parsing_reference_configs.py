"""The CIHP and MHP-v2 Parsing R-CNN configs against the authors' configs, value by value, and
the reference-only options (unaligned RoIAlign, biases at 2x LR without decay, smooth-L1 betas,
straddling anchors ignored, pixel mean / std) as the built model and optimizer use them."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from d2seg.config import load_config
from d2seg.solver import build_optimizer
from tests.helpers.configs import CONFIG_ROOT, CPU, TINY_RCNN

# The authors' values: soeaver/Parsing-R-CNN at commit 8c4d940dcd322bf7a8671f8b0faaabb3259bd384,
# cfgs/CIHP/e2e_parsing_rcnn_R-50-FPN_{1x,3x}_ms.yaml and cfgs/MHP-v2/
# e2e_parsing_rcnn_R-50-FPN_{1x,3x}_ms.yaml (identical but for the keys in AUTHORS_PER_CONFIG),
# over the defaults of rcnn/core/config.py for keys those files leave out (marked "default").
# fmt: off
AUTHORS_COMMON = {
    "PIXEL_MEANS": [102.9801, 115.9465, 122.7717],
    "PIXEL_STDS": [1.0, 1.0, 1.0],
    "RPN.ANCHOR_SIZES": (32, 64, 128, 256, 512),  # default
    "RPN.ASPECT_RATIOS": (0.5, 1.0, 2.0),  # default
    "RPN.PRE_NMS_TOP_N_TRAIN": 2000,
    "RPN.PRE_NMS_TOP_N_TEST": 1000,
    "RPN.FPN_POST_NMS_TOP_N_TEST": 1000,
    "RPN.NMS_THRESH": 0.7,  # default
    "RPN.FG_IOU_THRESHOLD": 0.7,  # default
    "RPN.BG_IOU_THRESHOLD": 0.3,  # default
    "RPN.BATCH_SIZE_PER_IMAGE": 256,  # default
    "RPN.POSITIVE_FRACTION": 0.5,  # default
    "RPN.STRADDLE_THRESH": 0,  # default
    "RPN.SMOOTH_L1_BETA": 1.0 / 9,  # default
    "FAST_RCNN.ROI_XFORM_METHOD": "ROIAlign",  # default
    "FAST_RCNN.ROI_XFORM_RESOLUTION": (7, 7),
    "FAST_RCNN.ROI_XFORM_SAMPLING_RATIO": 2,
    "FAST_RCNN.MLP_HEAD.MLP_DIM": 1024,  # default
    "FAST_RCNN.FG_IOU_THRESHOLD": 0.5,  # default
    "FAST_RCNN.BATCH_SIZE_PER_IMAGE": 512,  # default
    "FAST_RCNN.POSITIVE_FRACTION": 0.25,  # default
    "FAST_RCNN.BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),  # default
    "FAST_RCNN.SMOOTH_L1_BETA": 1,  # default
    "FAST_RCNN.SCORE_THRESH": 0.05,  # default
    "FAST_RCNN.NMS": 0.5,  # default
    "FAST_RCNN.DETECTIONS_PER_IMG": 100,  # default
    "PRCNN.ROI_XFORM_METHOD": "ROIAlign",  # default
    "PRCNN.ROI_STRIDES": [4],
    "PRCNN.ROI_SIZE_PER_IMG": 16,
    "PRCNN.ROI_XFORM_RESOLUTION": (32, 32),
    "PRCNN.ROI_XFORM_SAMPLING_RATIO": 2,
    "PRCNN.RESOLUTION": (128, 128),
    "PRCNN.LOSS_WEIGHT": 2.0,
    "PRCNN.PARSING_IGNORE_LABEL": 255,  # default
    "PRCNN.SCORE_THRESH": 0.001,  # default
    "PRCNN.GCE_HEAD.CONV_DIM": 512,  # default
    "PRCNN.GCE_HEAD.ASPPV3_DIM": 256,  # default
    "PRCNN.GCE_HEAD.ASPPV3_DILATION": (6, 12, 18),  # default
    "PRCNN.GCE_HEAD.NUM_CONVS_AFTER_ASPPV3": 4,
    "PRCNN.GCE_HEAD.USE_NL": True,
    "PRCNN.GCE_HEAD.NL_RATIO": 1.0,  # default
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.MOMENTUM": 0.9,  # default
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WARM_UP_ITERS": 500,
    "SOLVER.WARM_UP_FACTOR": 0.01,
    "SOLVER.BIAS_DOUBLE_LR": True,  # default
    "SOLVER.BIAS_WEIGHT_DECAY": False,  # default
    "TRAIN.BATCH_SIZE": 16,  # default
    "TRAIN.SCALES": (512, 640, 704, 768, 800, 864),
    "TRAIN.MAX_SIZE": 1400,
    "TEST.SCALE": 800,
    "TEST.MAX_SIZE": 1333,
}
AUTHORS_PER_CONFIG = {
    "CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml": {  # cfgs/CIHP/..._1x_ms.yaml
        "PRCNN.NUM_PARSING": 20, "PRCNN.SEMSEG_SCORE_THRESH": 0.3,  # default ("0.3 for CIHP")
        "SOLVER.MAX_ITER": 45000, "SOLVER.STEPS": [30000, 40000],
    },
    "CIHP-Parsing/parsing_rcnn_R_50_FPN_3x.yaml": {  # cfgs/CIHP/..._3x_ms.yaml
        "PRCNN.NUM_PARSING": 20, "PRCNN.SEMSEG_SCORE_THRESH": 0.3,  # default ("0.3 for CIHP")
        "SOLVER.MAX_ITER": 135000, "SOLVER.STEPS": [105000, 125000],
    },
    "MHP-v2-Parsing/parsing_rcnn_R_50_FPN_1x.yaml": {  # cfgs/MHP-v2/..._1x_ms.yaml
        "PRCNN.NUM_PARSING": 59, "PRCNN.SEMSEG_SCORE_THRESH": 0.05,
        "SOLVER.MAX_ITER": 24000, "SOLVER.STEPS": [15000, 20000],
    },
    "MHP-v2-Parsing/parsing_rcnn_R_50_FPN_3x.yaml": {  # cfgs/MHP-v2/..._3x_ms.yaml
        "PRCNN.NUM_PARSING": 59, "PRCNN.SEMSEG_SCORE_THRESH": 0.05,
        "SOLVER.MAX_ITER": 72000, "SOLVER.STEPS": [54000, 64000],
    },
}
# fmt: on

# authors' key -> (d2seg key, the d2seg value that means the authors' value)
_SIDE = lambda size: size[0]  # noqa: E731  (square RoI grids)
TO_D2SEG = {
    "PIXEL_MEANS": ("MODEL.PIXEL_MEAN", list),
    "PIXEL_STDS": ("MODEL.PIXEL_STD", list),
    "RPN.ANCHOR_SIZES": ("MODEL.ANCHOR_GENERATOR.SIZES", lambda v: [[s] for s in v]),
    "RPN.ASPECT_RATIOS": ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", lambda v: [list(v)]),
    "RPN.PRE_NMS_TOP_N_TRAIN": ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", int),
    "RPN.PRE_NMS_TOP_N_TEST": ("MODEL.RPN.PRE_NMS_TOPK_TEST", int),
    "RPN.FPN_POST_NMS_TOP_N_TEST": ("MODEL.RPN.POST_NMS_TOPK_TEST", int),
    "RPN.NMS_THRESH": ("MODEL.RPN.NMS_THRESH", float),
    "RPN.FG_IOU_THRESHOLD": ("MODEL.RPN.IOU_THRESHOLDS", lambda v: [0.3, v]),
    "RPN.BG_IOU_THRESHOLD": ("MODEL.RPN.IOU_THRESHOLDS", lambda v: [v, 0.7]),
    "RPN.BATCH_SIZE_PER_IMAGE": ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", int),
    "RPN.POSITIVE_FRACTION": ("MODEL.RPN.POSITIVE_FRACTION", float),
    "RPN.STRADDLE_THRESH": ("MODEL.RPN.BOUNDARY_THRESH", int),
    "RPN.SMOOTH_L1_BETA": ("MODEL.RPN.SMOOTH_L1_BETA", float),
    "FAST_RCNN.ROI_XFORM_METHOD": ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", str),
    "FAST_RCNN.ROI_XFORM_RESOLUTION": ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", _SIDE),
    "FAST_RCNN.ROI_XFORM_SAMPLING_RATIO": ("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", int),
    "FAST_RCNN.MLP_HEAD.MLP_DIM": ("MODEL.ROI_BOX_HEAD.FC_DIM", int),
    "FAST_RCNN.FG_IOU_THRESHOLD": ("MODEL.ROI_HEADS.IOU_THRESHOLDS", lambda v: [v]),
    "FAST_RCNN.BATCH_SIZE_PER_IMAGE": ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", int),
    "FAST_RCNN.POSITIVE_FRACTION": ("MODEL.ROI_HEADS.POSITIVE_FRACTION", float),
    "FAST_RCNN.BBOX_REG_WEIGHTS": ("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", tuple),
    "FAST_RCNN.SMOOTH_L1_BETA": ("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", float),
    "FAST_RCNN.SCORE_THRESH": ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", float),
    "FAST_RCNN.NMS": ("MODEL.ROI_HEADS.NMS_THRESH_TEST", float),
    "FAST_RCNN.DETECTIONS_PER_IMG": ("TEST.DETECTIONS_PER_IMAGE", int),
    "PRCNN.ROI_XFORM_METHOD": ("MODEL.ROI_PARSING_HEAD.POOLER_TYPE", str),
    "PRCNN.ROI_STRIDES": (
        "MODEL.ROI_PARSING_HEAD.IN_FEATURES",
        lambda v: [f"p{s.bit_length() - 1}" for s in v],
    ),  # noqa: E501
    "PRCNN.ROI_SIZE_PER_IMG": ("MODEL.ROI_PARSING_HEAD.ROI_SIZE_PER_IMG", int),
    "PRCNN.ROI_XFORM_RESOLUTION": ("MODEL.ROI_PARSING_HEAD.POOLER_RESOLUTION", _SIDE),
    "PRCNN.ROI_XFORM_SAMPLING_RATIO": ("MODEL.ROI_PARSING_HEAD.POOLER_SAMPLING_RATIO", int),
    "PRCNN.RESOLUTION": ("MODEL.ROI_PARSING_HEAD.RESOLUTION", _SIDE),
    "PRCNN.LOSS_WEIGHT": ("MODEL.ROI_PARSING_HEAD.LOSS_WEIGHT", float),
    "PRCNN.PARSING_IGNORE_LABEL": ("MODEL.ROI_PARSING_HEAD.IGNORE_VALUE", int),
    "PRCNN.SCORE_THRESH": ("TEST.PARSING.AP_SCORE_THRESH", float),
    "PRCNN.NUM_PARSING": ("MODEL.ROI_PARSING_HEAD.NUM_PARSING", int),
    "PRCNN.SEMSEG_SCORE_THRESH": ("TEST.PARSING.SEMSEG_SCORE_THRESH", float),
    "PRCNN.GCE_HEAD.CONV_DIM": ("MODEL.ROI_PARSING_HEAD.CONV_DIM", int),
    "PRCNN.GCE_HEAD.ASPPV3_DIM": ("MODEL.ROI_PARSING_HEAD.ASPP_DIM", int),
    "PRCNN.GCE_HEAD.ASPPV3_DILATION": ("MODEL.ROI_PARSING_HEAD.ASPP_DILATIONS", list),
    "PRCNN.GCE_HEAD.NUM_CONVS_AFTER_ASPPV3": ("MODEL.ROI_PARSING_HEAD.NUM_CONVS", int),
    "PRCNN.GCE_HEAD.USE_NL": ("MODEL.ROI_PARSING_HEAD.USE_NONLOCAL", bool),
    "PRCNN.GCE_HEAD.NL_RATIO": ("MODEL.ROI_PARSING_HEAD.NONLOCAL_RATIO", float),
    "SOLVER.WEIGHT_DECAY": ("SOLVER.WEIGHT_DECAY", float),
    "SOLVER.BASE_LR": ("SOLVER.BASE_LR", float),
    "SOLVER.MOMENTUM": ("SOLVER.MOMENTUM", float),
    "SOLVER.GAMMA": ("SOLVER.GAMMA", float),
    "SOLVER.WARM_UP_ITERS": ("SOLVER.WARMUP_ITERS", int),
    "SOLVER.WARM_UP_FACTOR": ("SOLVER.WARMUP_FACTOR", float),
    "SOLVER.BIAS_DOUBLE_LR": ("SOLVER.BIAS_LR_FACTOR", lambda v: 2.0 if v else 1.0),
    "SOLVER.BIAS_WEIGHT_DECAY": ("SOLVER.WEIGHT_DECAY_BIAS", lambda v: 0.0001 if v else 0.0),
    "SOLVER.MAX_ITER": ("SOLVER.MAX_ITER", int),
    "SOLVER.STEPS": ("SOLVER.STEPS", tuple),
    "TRAIN.BATCH_SIZE": ("SOLVER.IMS_PER_BATCH", int),
    "TRAIN.SCALES": ("INPUT.MIN_SIZE_TRAIN", tuple),
    "TRAIN.MAX_SIZE": ("INPUT.MAX_SIZE_TRAIN", int),
    "TEST.SCALE": ("INPUT.MIN_SIZE_TEST", int),
    "TEST.MAX_SIZE": ("INPUT.MAX_SIZE_TEST", int),
}


def _config(name: str, opts: list[str] = CPU):
    return load_config(str(CONFIG_ROOT / name), opts)


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(AUTHORS_PER_CONFIG))
def test_every_value_is_the_authors(name):
    cfg = _config(name)
    authors = AUTHORS_COMMON | AUTHORS_PER_CONFIG[name]
    assert set(authors) <= set(TO_D2SEG)
    wrong = {}
    for key, value in authors.items():
        d2seg_key, convert = TO_D2SEG[key]
        expected, actual = convert(value), _value(cfg, d2seg_key)
        if isinstance(expected, float):
            matches = actual == pytest.approx(expected, rel=1e-12)
        else:
            matches = type(expected)(actual) == expected
        if not matches:
            wrong[key] = f"{d2seg_key} is {actual!r}, the authors' {value!r} means {expected!r}"
    assert not wrong, wrong


@pytest.mark.parametrize("name", sorted(AUTHORS_PER_CONFIG))
def test_evaluation_follows_the_authors_protocol(name):
    parsing = _config(name).TEST.PARSING
    assert (parsing.MATCHING, parsing.COUNT_EMPTY_IMAGES) == ("reference", False)


def test_lip_keeps_the_default_protocol():
    defaults = _config("quickstart/parsing_rcnn_R_18_FPN_synthetic.yaml").TEST.PARSING
    lip = _config("LIP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml").TEST.PARSING
    assert (lip.MATCHING, lip.COUNT_EMPTY_IMAGES) == ("unclaimed", True)
    assert (defaults.MATCHING, defaults.COUNT_EMPTY_IMAGES) == ("unclaimed", True)


def test_the_built_model_and_optimizer_use_the_reference_options():
    cfg = _config("CIHP-Parsing/parsing_rcnn_R_50_FPN_3x.yaml")
    model = build_model(cfg)
    assert model.pixel_mean.flatten().tolist() == pytest.approx([102.9801, 115.9465, 122.7717])
    assert model.pixel_std.flatten().tolist() == [1.0, 1.0, 1.0]
    rpn, roi_heads = model.proposal_generator, model.roi_heads
    assert rpn.anchor_boundary_thresh == 0 and rpn.smooth_l1_beta == pytest.approx(1 / 9)
    assert roi_heads.box_predictor.smooth_l1_beta == 1.0
    for pooler in (roi_heads.box_pooler, roi_heads.parsing_pooler):
        assert all(not level.aligned for level in pooler.level_poolers)
    (parsing_level,) = roi_heads.parsing_pooler.level_poolers  # P2 only, stride 4
    assert parsing_level.spatial_scale == 0.25
    assert (parsing_level.output_size, parsing_level.sampling_ratio) == ((32, 32), 2)
    # the reference's optimizer (utils/optimizer.py): biases 2x LR without decay, GroupNorm
    # weights without decay (SOLVER.WEIGHT_DECAY_GN 0), every other weight LR 0.02, decay 1e-4
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    group_norms = {n for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    groups = [
        (names[id(p)], g["lr"], g["weight_decay"])
        for g in build_optimizer(cfg, model).param_groups
        for p in g["params"]
    ]
    assert sorted(n for n, _, _ in groups) == sorted(names.values())
    assert any(n.rsplit(".", 1)[0] in group_norms for n in names.values())
    for name, lr, weight_decay in groups:
        if name.endswith(".bias"):
            expected = (0.04, 0.0)
        elif name.rsplit(".", 1)[0] in group_norms:
            expected = (0.02, 0.0)
        else:
            expected = (0.02, 0.0001)
        assert (lr, weight_decay) == pytest.approx(expected), name


def _inside_by_loop(boxes: list[list[float]], height: int, width: int, thresh: int) -> list[bool]:
    """maskrcnn-benchmark's `add_visibility_to`, one anchor at a time."""
    return [
        x0 >= -thresh and y0 >= -thresh and x1 < width + thresh and y1 < height + thresh
        for x0, y0, x1, y1 in boxes
    ]


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def _rpn_labels_by_loop(anchors, gt_boxes, height, width, thresh):
    """RPN anchor labels as maskrcnn-benchmark's RPN loss sets them before sampling: IoU >= 0.7
    positive, < 0.3 negative, else ignored (-1); each ground-truth box's best anchors positive;
    then the anchors outside the image by more than `thresh` ignored."""
    ious = [[_iou(a, g) for g in gt_boxes] for a in anchors]
    best_per_gt = [max(row[j] for row in ious) for j in range(len(gt_boxes))]
    labels = []
    for row, inside in zip(ious, _inside_by_loop(anchors, height, width, thresh)):
        label = 1 if max(row) >= 0.7 else (0 if max(row) < 0.3 else -1)
        if any(iou == best and best > 0 for iou, best in zip(row, best_per_gt)):
            label = 1
        labels.append(label if inside else -1)
    return labels


@pytest.mark.parametrize(
    "name",
    ["CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml", "MHP-v2-Parsing/parsing_rcnn_R_50_FPN_1x.yaml"],
)
def test_straddling_anchors_are_ignored_like_the_reference(name):
    # every inside anchor kept (no subsampling), so labels are the matcher's, anchor by anchor
    opts = ["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000", "MODEL.RPN.POSITIVE_FRACTION", "1.0"]
    rpn = build_model(_config(name, TINY_RCNN + opts)).proposal_generator
    height, width = 48, 72
    features = [torch.zeros(1, 1, -(-height // s), -(-width // s)) for s in (4, 8, 16, 32, 64)]
    anchors = rpn.anchor_generator(features)
    gt_boxes = [[2.0, 3.0, 30.0, 44.0], [40.0, 10.0, 71.5, 40.0]]
    gt = Instances((height, width), gt_boxes=Boxes(torch.tensor(gt_boxes)))
    (labels,), _ = rpn.label_and_sample_anchors(anchors, [gt])
    boxes = Boxes.cat(anchors).tensor.tolist()
    expected = _rpn_labels_by_loop(boxes, gt_boxes, height, width, thresh=0)
    assert labels.tolist() == expected
    unmasked = _rpn_labels_by_loop(boxes, gt_boxes, height, width, thresh=10**6)
    dropped = [a for a, b in zip(expected, unmasked) if a != b]
    assert dropped.count(-1) == len(dropped) > 0  # straddling anchors that would have counted
