"""Parsing R-CNN model: GCE head layers and parameter count, the non-local block against its
matrix formula, paste-back against a per-pixel loop and cv2, losses, RoI selection, and a tiny
model that trains a step and predicts `pred_parsing`."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from d2seg.config import load_config
from d2seg.data.targets.parsing import PersonPartMaps
from d2seg.modeling.postprocessing.parsing import (
    PartProbabilities,
    crops_to_label_maps,
    paste_parsing,
)
from d2seg.modeling.roi_heads.parsing import (
    NonLocalBlock2d,
    ParsingGCEHead,
    parsing_inference,
    parsing_loss,
    sample_parsing_rois,
)
from tests.helpers.scripts import REPO_ROOT

BASE = str(REPO_ROOT / "configs/Base-ParsingRCNN-FPN.yaml")
# fmt: off
TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.ROI_PARSING_HEAD.ASPP_DIM", "16",
    "MODEL.ROI_PARSING_HEAD.CONV_DIM", "32",
    "MODEL.ROI_PARSING_HEAD.POOLER_RESOLUTION", "8",
    "MODEL.ROI_PARSING_HEAD.RESOLUTION", "32",
    "MODEL.ROI_PARSINGIOU_HEAD.CONV_DIM", "16",
    "MODEL.ROI_PARSINGIOU_HEAD.FC_DIM", "16",
    "TEST.DETECTIONS_PER_IMAGE", "5",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]
# fmt: on


def _conv(in_channels, out_channels, kernel, bias=True):
    return in_channels * out_channels * kernel * kernel + (out_channels if bias else 0)


def _gce_parameter_count(c, aspp, dim, classes, norm):
    """The GCE head's layer list as the paper and the reference write it, counted by hand."""
    bias = not norm
    gn = (lambda channels: 2 * channels) if norm else (lambda channels: 0)
    layers = [
        _conv(c, aspp, 1, bias) + gn(aspp),  # ASPP image pooling branch: 1x1
        _conv(c, aspp, 1, bias) + gn(aspp),  # ASPP 1x1
        *[_conv(c, aspp, 3, bias) + gn(aspp) for _ in (6, 12, 18)],  # ASPP 3x3 dilated
        _conv(5 * aspp, dim, 1, bias) + gn(dim),  # concat 5 x ASPP -> 1x1 conv
        *[_conv(dim, dim, 1) for _ in ("theta", "phi", "g", "out")],  # non-local 1x1 convs
        2 * dim,  # non-local GroupNorm(32)
        *[_conv(dim, dim, 3, bias) + gn(dim) for _ in range(4)],  # 4 x 3x3 conv
        dim * classes * 4 * 4 + classes,  # ConvTranspose 4x4 to the part classes
    ]
    return sum(layers)


def _gce(norm="", channels=256, aspp=256, dim=512, classes=20):
    return ParsingGCEHead(
        input_shape=ShapeSpec(channels=channels, height=32, width=32),
        num_parsing=classes,
        resolution=128,
        aspp_dim=aspp,
        aspp_dilations=[6, 12, 18],
        conv_dim=dim,
        num_convs=4,
        use_nonlocal=True,
        nonlocal_ratio=1.0,
        norm=norm,
    )


@pytest.mark.parametrize("norm", ["", "GN"])
def test_gce_head_parameter_count_matches_the_layer_list(norm):
    head = _gce(norm)
    assert sum(p.numel() for p in head.parameters()) == _gce_parameter_count(
        256, 256, 512, 20, norm
    )
    assert sum(p.numel() for p in head.parameters()) == 13_212_436 or norm
    assert [m.dilation[0] for m in head.aspp] == [1, 6, 12, 18]
    assert [m.padding[0] for m in head.aspp] == [0, 6, 12, 18]


def test_gce_head_shapes_and_pooling_branch():
    torch.manual_seed(0)
    head = _gce(channels=32, aspp=32, dim=64, classes=7).eval()
    x = torch.randn(3, 32, 32, 32)
    seen = {}
    head.aspp_pool.register_forward_hook(lambda m, i, o: seen.update(pool=o) and None)
    head.predictor.register_forward_hook(lambda m, i, o: seen.update(deconv=o) and None)
    with torch.no_grad():
        logits, features = head(x)
        pool, deconv = seen["pool"], seen["deconv"]
    assert logits.shape == (3, 7, 128, 128) and features.shape == (3, 64, 32, 32)
    assert pool.shape == (3, 32, 1, 1)  # image pooling: one value per channel
    assert deconv.shape == (3, 7, 64, 64)  # deconv x2, then bilinear x2
    expected = F.interpolate(deconv, size=(128, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)
    assert head(torch.zeros(0, 32, 32, 32))[0].shape == (0, 7, 128, 128)
    with pytest.raises(ValueError, match="RESOLUTION 100"):
        ParsingGCEHead(
            input_shape=ShapeSpec(channels=8, height=32, width=32),
            num_parsing=3,
            resolution=100,
            aspp_dim=8,
            aspp_dilations=[6],
            conv_dim=32,
            num_convs=1,
            use_nonlocal=False,
            nonlocal_ratio=1.0,
            norm="",
        )


def test_nonlocal_block_matches_the_matrix_formula():
    torch.manual_seed(0)
    block = NonLocalBlock2d(64, 32)
    for parameter in block.parameters():  # away from the tiny initialisation
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(2, 64, 6, 8)
    with torch.no_grad():
        out = block(x).double()

    def w(conv):
        return conv.weight[:, :, 0, 0].double(), conv.bias.double()[:, None]

    for n in range(2):
        x_n = x[n].double()
        pooled = torch.stack(
            [  # 2 x 2 max pooling, window by window
                torch.stack(
                    [
                        x_n[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].amax(dim=(1, 2))
                        for j in range(4)
                    ],
                    dim=1,
                )
                for i in range(3)
            ],
            dim=1,
        ).reshape(64, 12)
        flat = x_n.reshape(64, 48)
        theta = w(block.theta)[0] @ flat + w(block.theta)[1]  # (32, 48)
        phi = w(block.phi)[0] @ pooled + w(block.phi)[1]  # (32, 12)
        g = w(block.g)[0] @ pooled + w(block.g)[1]
        scores = theta.T @ phi / math.sqrt(32)  # (48, 12)
        attention = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        attention = attention / attention.sum(dim=1, keepdim=True)
        z = w(block.out)[0] @ (g @ attention.T) + w(block.out)[1]  # (64, 48)
        groups = z.reshape(32, 2 * 48)  # GroupNorm(32): two channels per group
        normed = (groups - groups.mean(1, keepdim=True)) / torch.sqrt(
            groups.var(1, unbiased=False, keepdim=True) + 1e-5
        )
        normed = (
            normed.reshape(64, 48) * block.norm.weight.double()[:, None]
            + (block.norm.bias.double()[:, None])
        )
        torch.testing.assert_close(out[n], (flat + normed).reshape(64, 6, 8), rtol=1e-5, atol=1e-5)


def _expanded_box(box, side: int) -> tuple[int, int, int, int]:
    """The reference's paste box: expanded by (M + 2) / M about its centre, truncated to
    integers, inclusive ends: (x0, y0, width, height)."""
    scale = (side + 2) / side
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w, half_h = (box[2] - box[0]) / 2 * scale, (box[3] - box[1]) / 2 * scale
    x0, y0, x1, y1 = (int(v) for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    return x0, y0, max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)


def _paste_per_pixel(probs: np.ndarray, box, height: int, width: int):
    """The reference paste written out pixel by pixel: 1-pixel zero border, the expanded box,
    bilinear sampling with half-pixel centres and edge clamping, argmax over parts, clipped to
    the image. Returns {(y, x): (label, two largest values)}."""
    classes, side, _ = probs.shape
    padded = np.zeros((classes, side + 2, side + 2))
    padded[:, 1:-1, 1:-1] = probs
    x0, y0, box_w, box_h = _expanded_box(box, side)

    def source(position, start, size):
        s = max((position - start + 0.5) * (side + 2) / size - 0.5, 0.0)
        low = min(int(math.floor(s)), side + 1)
        return low, min(low + 1, side + 1), s - low

    labels = {}
    for y in range(max(y0, 0), min(y0 + box_h, height)):
        ly, hy, fy = source(y, y0, box_h)
        for x in range(max(x0, 0), min(x0 + box_w, width)):
            lx, hx, fx = source(x, x0, box_w)
            value = (1 - fy) * ((1 - fx) * padded[:, ly, lx] + fx * padded[:, ly, hx]) + fy * (
                (1 - fx) * padded[:, hy, lx] + fx * padded[:, hy, hx]
            )
            labels[y, x] = (int(np.argmax(value)), np.sort(value)[-2:])
    return labels


def test_paste_matches_per_pixel_loop_and_cv2_near_image_borders():
    rng = np.random.default_rng(0)
    height, width, side, classes = 40, 50, 8, 4
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(24, classes, side, side))) * 3, 1)
    centers = rng.uniform([-5, -5], [width + 5, height + 5], (24, 2))
    sizes = rng.uniform(1, 30, (24, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).astype(np.float32)
    boxes[0] = [-30, -30, -10, -10]  # entirely outside: an empty crop
    boxes[1] = [0, 0, width, height]  # the whole image
    crops = paste_parsing(probs.float(), torch.from_numpy(boxes), (height, width))
    full = crops_to_label_maps(crops, (height, width))
    assert crops[0].labels.numel() == 0 and not full[0].any()
    for k, crop in enumerate(crops):
        covered = np.zeros((height, width), dtype=bool)
        for (y, x), (label, top_two) in _paste_per_pixel(
            probs[k].numpy(), boxes[k], height, width
        ).items():
            covered[y, x] = True
            if top_two[1] - top_two[0] > 1e-5:  # skip exact ties of float rounding
                assert full[k, y, x] == label, (k, y, x)
        assert not full[k][torch.from_numpy(~covered)].any()
        if covered.any():
            assert crop.labels.shape == (covered.any(1).sum(), covered.any(0).sum())
            assert (crop.y0, crop.x0) == tuple(
                int(np.nonzero(a)[0][0]) for a in (covered.any(1), covered.any(0))
            )
        else:
            assert crop.labels.numel() == 0
        # the reference's own resize: cv2 INTER_LINEAR of the padded probabilities to the box
        x0, y0, box_w, box_h = _expanded_box(boxes[k], side)
        padded = np.pad(probs[k].numpy().astype(np.float32), ((0, 0), (1, 1), (1, 1)))
        resized = cv2.resize(
            np.ascontiguousarray(padded.transpose(1, 2, 0)),
            (box_w, box_h),
            interpolation=cv2.INTER_LINEAR,
        ).reshape(box_h, box_w, classes)
        rows, cols = crop.labels.shape
        window = resized[crop.y0 - y0 : crop.y0 - y0 + rows, crop.x0 - x0 : crop.x0 - x0 + cols]
        top_two = np.sort(window, axis=2)[..., -2:]
        clear = top_two[..., 1] - top_two[..., 0] > 1e-5
        np.testing.assert_array_equal(window.argmax(axis=2)[clear], crop.labels.numpy()[clear])


def test_part_probabilities_ride_through_instances():
    probs = torch.rand(4, 3, 8, 8)
    instances = Instances(
        (20, 30),
        pred_parsing=PartProbabilities(probs),
        pred_boxes=Boxes(torch.tensor([[0.0, 0, 5, 5]] * 4)),
    )
    picked = instances[torch.tensor([True, False, True, False])]
    torch.testing.assert_close(picked.pred_parsing.tensor, probs[[0, 2]])
    assert instances[1].pred_parsing.tensor.shape == (1, 3, 8, 8)
    assert len(Instances.cat([picked, instances]).pred_parsing) == 6
    with pytest.raises(ValueError, match=r"\(R, C, M, M\)"):
        PartProbabilities(probs[0])


def test_parsing_loss_is_mean_cross_entropy_over_pixels():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4, 4, requires_grad=True)
    targets = torch.randint(0, 5, (3, 4, 4))
    targets[0, 0, 0] = 255
    log_probs = torch.log_softmax(logits.detach().double(), dim=1)
    terms = [
        -log_probs[r, targets[r, i, j], i, j]
        for r in range(3)
        for i in range(4)
        for j in range(4)
        if targets[r, i, j] != 255
    ]
    expected = sum(terms) / len(terms)
    assert parsing_loss(logits, targets, 255).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = parsing_loss(logits[:0], targets[:0], 255)
    empty.backward()
    assert empty.item() == 0.0 and logits.grad is not None
    with pytest.raises(ValueError, match="part id 9.*NUM_PARSING"):
        parsing_loss(logits, torch.full_like(targets, 9), 255)


def test_parsing_inference_sets_probabilities_and_scores():
    logits = torch.randn(5, 3, 4, 4)
    images = [
        Instances((8, 8), scores=torch.tensor([0.9, 0.4])),
        Instances((8, 8), scores=torch.tensor([0.8, 0.6, 0.25])),
    ]
    parsing_inference(logits, images)
    torch.testing.assert_close(images[1].pred_parsing.tensor, torch.softmax(logits[2:], 1))
    torch.testing.assert_close(images[0].parsing_scores, images[0].scores)
    parsing_inference(logits, images, pred_iou=torch.tensor([0.25, 0.0, 0.5, -0.2, 1.5]))
    torch.testing.assert_close(images[0].parsing_scores, torch.tensor([math.sqrt(0.225), 0.0]))
    torch.testing.assert_close(images[1].parsing_scores, torch.tensor([math.sqrt(0.4), 0.0, 0.5]))


def test_sample_parsing_rois_keeps_at_most_n_at_random():
    proposals = [
        Instances((10, 10), gt_classes=torch.arange(30)),
        Instances((10, 10), gt_classes=torch.arange(5)),
    ]
    torch.manual_seed(0)
    first = sample_parsing_rois(proposals, 16)
    assert [len(x) for x in first] == [16, 5]
    assert len(set(first[0].gt_classes.tolist())) == 16
    second = sample_parsing_rois(proposals, 16)
    assert first[0].gt_classes.tolist() != second[0].gt_classes.tolist()
    assert [len(x) for x in sample_parsing_rois(proposals, -1)] == [30, 5]


def _person_batch(height=96, width=128):
    """One image with two persons and their part maps, as the mapper delivers it."""
    generator = torch.Generator().manual_seed(0)
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 10, 60, 90], [50, 20, 120, 80]]))
    instances.gt_classes = torch.zeros(2, dtype=torch.long)
    maps = torch.zeros(2, height, width, dtype=torch.uint8)
    maps[0, 10:90, 10:60] = torch.randint(1, 20, (80, 50), generator=generator).byte()
    maps[1, 20:80, 50:120] = 3
    instances.gt_parsing = PersonPartMaps(maps)
    image = torch.rand(3, height, width, generator=generator) * 255
    return [{"image": image, "instances": instances, "height": height, "width": width}]


@pytest.mark.parametrize("rescoring", [False, True])
def test_tiny_model_trains_a_step_and_predicts_parsing(rescoring):
    cfg = load_config(BASE, TINY + ["MODEL.PARSINGIOU_ON", str(rescoring)])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = _person_batch()
    with EventStorage(0):
        losses = model(batch)
        sum(losses.values()).backward()
    expected = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "loss_parsing"}
    assert set(losses) == expected | ({"loss_parsingiou"} if rescoring else set())
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in model.roi_heads.parsing_head.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 48, "width": 64}])[0]["instances"]
    assert len(out) == 5 and out.image_size == (48, 64)
    assert out.pred_parsing.tensor.shape == (5, 20, 32, 32)
    torch.testing.assert_close(out.pred_parsing.tensor.sum(1), torch.ones(5, 32, 32))
    if rescoring:
        assert ((out.parsing_scores >= 0) & (out.parsing_scores <= 1)).all()
    else:
        torch.testing.assert_close(out.parsing_scores, out.scores)
    crops = out.pred_parsing.label_crops(out.pred_boxes.tensor, out.image_size)
    assert all(c.x0 + c.labels.shape[1] <= 64 and c.y0 + c.labels.shape[0] <= 48 for c in crops)
    model.roi_heads.box_predictor.test_score_thresh = 1.1  # no detection at all
    with torch.no_grad():
        empty = model([{"image": batch[0]["image"]}])[0]["instances"]
    assert len(empty) == 0 and empty.pred_parsing.tensor.shape == (0, 20, 32, 32)
    assert empty.parsing_scores.shape == (0,)


def _roi_heads_inputs(proposal_boxes, height=64, width=64):
    gt = Instances(
        (height, width),
        gt_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10]])),
        gt_classes=torch.zeros(1, dtype=torch.long),
        gt_parsing=PersonPartMaps(torch.ones(1, height, width, dtype=torch.uint8)),
    )
    proposals = Instances(
        (height, width),
        proposal_boxes=Boxes(torch.tensor(proposal_boxes)),
        objectness_logits=torch.zeros(len(proposal_boxes)),
    )
    return [proposals], [gt]


def _parsing_rois(model, proposal_boxes):
    """The boxes the parsing branch pools in one training forward of the ROI heads."""
    seen = []
    hook = model.roi_heads.parsing_pooler.register_forward_pre_hook(
        lambda module, args: seen.append(args[1])
    )
    proposals, targets = _roi_heads_inputs(proposal_boxes)
    features = {f"p{k}": torch.randn(1, 32, 64 // 2**k, 64 // 2**k) for k in range(2, 7)}
    with EventStorage(0):
        model.roi_heads(None, features, proposals, targets)
    hook.remove()
    return seen[0][0].tensor.tolist()


def test_training_rois_are_foreground_from_iou_one_half_at_most_16():
    # 512 sampled RoIs of which up to 128 foreground: the 16 are the parsing branch's choice
    cfg = load_config(
        BASE,
        TINY
        + [
            "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT",
            "False",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            "512",
        ],
    )
    model = build_model(cfg).train()
    exactly_half = [0.0, 0.0, 20.0, 10.0]  # IoU 100 / 200 = 0.5: foreground
    just_below = [0.0, 0.0, 10.0, 20.5]  # IoU 100 / 205 < 0.5: background
    assert _parsing_rois(model, [exactly_half, just_below]) == [exactly_half]
    many = [[0.0, 0.0, 10.0 + k / 4, 10.0] for k in range(30)]  # all foreground
    rois = _parsing_rois(model, many)
    assert len(rois) == 16 and all(r in many for r in rois)


def test_draw_parsing_paints_parts_in_the_palette_most_confident_on_top():
    from detectron2.data import Metadata

    from d2seg.utils.visualizer import draw_parsing

    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    metadata = Metadata(
        name="_test_parsing_palette", parsing_colors=palette, thing_classes=["person"]
    )
    one_hot = torch.zeros(3, 3, 8, 8)
    one_hot[0, 1], one_hot[1, 2], one_hot[2, 1] = 1, 1, 1  # persons of part 1, 2, 1
    instances = Instances(
        (40, 60),
        pred_parsing=PartProbabilities(one_hot),
        pred_classes=torch.zeros(3).long(),
        pred_boxes=Boxes(torch.tensor([[4.0, 4, 28, 36], [16, 4, 40, 36], [44, 4, 56, 36]])),
        scores=torch.tensor([0.9, 0.6, 0.3]),
    )
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    drawn = draw_parsing(image, instances, metadata, score_threshold=0.5)
    assert drawn.shape == (40, 60, 3)
    blend = lambda color: np.round(0.4 * 100 + 0.6 * np.array(color))  # noqa: E731
    np.testing.assert_array_equal(drawn[20, 22], blend(palette[1]))  # overlap: score 0.9 wins
    np.testing.assert_array_equal(drawn[20, 35], blend(palette[2]))
    np.testing.assert_array_equal(drawn[20, 50], [100, 100, 100])  # below the threshold
    with pytest.raises(KeyError, match="parsing_colors"):
        draw_parsing(image, instances, Metadata(name="_test_no_palette"))


def test_parsingiou_head_layers_and_max_pooled_logits():
    from d2seg.modeling.roi_heads.parsing import ParsingIoUHead

    head = ParsingIoUHead(
        in_channels=512, num_parsing=20, conv_dim=128, num_conv=2, fc_dim=256, num_fc=2
    )
    expected = (
        _conv(532, 128, 3)
        + _conv(128, 128, 3)  # features + pooled logits, 2 convs
        + 128 * 256
        + 256
        + 256 * 256
        + 256
        + 256
        + 1
    )  # FC 256, FC 256, FC 1
    assert sum(p.numel() for p in head.parameters()) == expected
    last_conv = [m for m in head.layers if isinstance(m, torch.nn.Conv2d)][-1]
    seen = []
    last_conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    torch.manual_seed(0)
    features, logits = torch.randn(3, 512, 32, 32), torch.randn(3, 20, 128, 128)
    pooled_back = F.interpolate(F.max_pool2d(logits, 4), scale_factor=4, mode="nearest")
    with torch.no_grad():
        iou = head(features, logits)
        torch.testing.assert_close(iou, head(features, pooled_back))  # only 4x4 maxima count
    assert iou.shape == (3,) and seen[0] == (3, 128, 16, 16)  # the last conv has stride 2


def test_loss_weights_scale_the_parsing_losses():
    losses = {}
    for weight in ("1.0", "2.0"):
        cfg = load_config(
            BASE,
            TINY
            + [
                "MODEL.PARSINGIOU_ON",
                "True",
                "MODEL.ROI_PARSING_HEAD.LOSS_WEIGHT",
                weight,
                "MODEL.ROI_PARSINGIOU_HEAD.LOSS_WEIGHT",
                weight,
            ],
        )
        torch.manual_seed(0)
        model = build_model(cfg).train()
        with EventStorage(0), torch.no_grad():
            losses[weight] = model(_person_batch())
    for name in ("loss_parsing", "loss_parsingiou"):
        assert losses["2.0"][name].item() == pytest.approx(2 * losses["1.0"][name].item())
    assert losses["1.0"]["loss_parsingiou"] > 0


def test_parsingiou_targets_are_the_mean_part_iou_of_the_argmax(monkeypatch):
    """The L2 loss of the ParsingIoU head against parsing_iou(argmax of the logits, targets),
    on RoIs whose target is positive (the reference's l2_loss)."""
    import d2seg.modeling.roi_heads.parsing as parsing_module
    from d2seg.modeling.roi_heads.parsing_targets import parsing_iou

    cfg = load_config(BASE, TINY + ["MODEL.PARSINGIOU_ON", "True"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    seen = {}
    original_loss = parsing_module.parsing_loss
    monkeypatch.setattr(
        parsing_module,
        "parsing_loss",
        lambda logits, targets, ignore: (
            seen.update(logits=logits.detach(), targets=targets)
            or original_loss(logits, targets, ignore)
        ),
    )
    model.roi_heads.parsingiou_head.register_forward_hook(
        lambda module, args, out: seen.update(pred=out.detach())
    )
    with EventStorage(0), torch.no_grad():
        losses = model(_person_batch())
    expected_targets = parsing_iou(seen["logits"].argmax(dim=1), seen["targets"], 20)
    positive = expected_targets > 0
    expected = 0.5 * ((seen["pred"][positive] - expected_targets[positive]) ** 2).mean()
    assert losses["loss_parsingiou"].item() == pytest.approx(expected.item(), rel=1e-5)
