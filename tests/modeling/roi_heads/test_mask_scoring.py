"""Mask Scoring R-CNN: the MaskIoU head inside Detectron2's mask head (layout, initialisation,
inputs, loss, gradients, inference), with StandardROIHeads, CascadeROIHeads and Panoptic FPN."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY, StandardROIHeads, build_model
from detectron2.modeling.roi_heads.cascade_rcnn import CascadeROIHeads
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import Boxes, Instances, PolygonMasks, pairwise_iou
from detectron2.utils.events import EventStorage

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from d2seg.modeling.meta_arch.mask_scoring_panoptic_fpn import ranked_by_mask_scores
from d2seg.modeling.roi_heads import (
    MaskIoUHead,
    MaskScoringConvUpsampleHead,
    maskiou_inference,
    maskiou_loss,
)
from d2seg.modeling.roi_heads.mask_iou_targets import gt_inbox_fraction, mask_iou_targets
from d2seg.modeling.roi_heads.mask_scoring import add_mask_scoring_config
from tests.helpers.configs import CONFIG_ROOT, TINY_RCNN

MS_QUICKSTART = str(CONFIG_ROOT / "quickstart" / "mask_scoring_rcnn_R_18_FPN_synthetic.yaml")
MS_CASCADE = str(
    CONFIG_ROOT / "COCO-InstanceSegmentation" / "mask_scoring_cascade_rcnn_R_50_FPN_1x.yaml"
)
MS_PANOPTIC = str(CONFIG_ROOT / "quickstart" / "panoptic_fpn_mask_scoring_R_18_synthetic.yaml")
FPN_WIDTH, MASK_CONV_WIDTH = 32, 24
# The mask convs are narrower than the FPN, so features taken after a mask conv cannot pass for
# the pooled RoI features the MaskIoU head must read.
TINY_MS = TINY_RCNN + [
    "MODEL.FPN.OUT_CHANNELS",
    str(FPN_WIDTH),
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    str(MASK_CONV_WIDTH),
]


def test_config_defaults_are_the_references():
    cfg = get_cfg()
    add_mask_scoring_config(cfg)
    head = cfg.MODEL.ROI_MASKIOU_HEAD
    assert (head.NAME, head.CONV_DIM, head.NUM_CONV, head.FC_DIM, head.NUM_FC) == (
        "MaskIoUHead",
        256,
        4,
        1024,
        2,
    )
    assert (head.LOSS_WEIGHT, head.DETACH_INPUT) == (1.0, False)
    assert head.PANOPTIC_THRESH_SCORE == "mask_scores"


def test_registered_as_a_mask_head_next_to_detectron2_projects():
    """The projects installed with Detectron2 import beside d2seg (no name registered twice),
    and the model keeps Detectron2's own ROI heads, pooler and mask layers."""
    import detectron2.projects.deeplab  # noqa: F401
    import detectron2.projects.panoptic_deeplab  # noqa: F401
    import detectron2.projects.point_rend  # noqa: F401

    assert ROI_MASK_HEAD_REGISTRY.get("MaskScoringConvUpsampleHead") is (
        MaskScoringConvUpsampleHead
    )
    model = build_model(load_config(MS_QUICKSTART, TINY_MS))
    assert type(model.roi_heads) is StandardROIHeads
    mask_head = model.roi_heads.mask_head
    assert isinstance(mask_head, MaskRCNNConvUpsampleHead)
    plain = build_model(
        load_config(
            MS_QUICKSTART, TINY_MS + ["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"]
        )
    ).roi_heads.mask_head
    own = {k for k in mask_head.state_dict() if not k.startswith("maskiou_head.")}
    assert own == set(plain.state_dict())  # Mask R-CNN checkpoints load into the mask layers


def test_head_layout_and_init_follow_the_reference():
    """Paper sec. 3.3 layout; the reference's init: convs kaiming-normal fan_out, hidden FCs
    kaiming-uniform a=1, predictor normal std 0.01, zero biases. The input is narrower than the
    convs so that fan_in and fan_out differ."""
    torch.manual_seed(0)
    head = MaskIoUHead(
        input_shape=ShapeSpec(channels=64, height=14, width=14),
        num_classes=80,
        conv_dim=256,
        num_conv=4,
        fc_dim=1024,
        num_fc=2,
    )
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [65, 256, 256, 256]  # features + mask channel
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4
    assert [c.stride for c in convs] == [(1, 1), (1, 1), (1, 1), (2, 2)]
    fcs = [m for m in head.fcs if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 7 * 7, 1024), (1024, 1024)]
    assert head.predictor.out_features == 80
    for conv in convs:  # normal with std sqrt(2 / fan_out), fan_out = 256 * 3 * 3
        std = (2 / (256 * 9)) ** 0.5
        assert conv.weight.std().item() == pytest.approx(std, rel=0.05)
        assert conv.weight.abs().max().item() > 3 * std  # a uniform would stop at 1.73 std
    for fc in fcs:  # uniform on +-sqrt(6 / ((1 + a^2) fan_in)) with a = 1
        bound = (3 / fc.in_features) ** 0.5
        assert bound * 0.99 < fc.weight.abs().max().item() <= bound
        assert fc.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)
    assert head.predictor.weight.std().item() == pytest.approx(0.01, rel=0.05)
    for layer in convs + fcs + [head.predictor]:
        assert layer.bias.abs().sum() == 0
    assert head(torch.randn(5, 64, 14, 14), torch.rand(5, 28, 28)).shape == (5, 80)


def test_mask_input_is_max_pooled():
    head = MaskIoUHead(
        input_shape=ShapeSpec(channels=1, height=2, width=2),
        num_classes=1,
        conv_dim=1,
        num_conv=0,
        fc_dim=1,
        num_fc=0,
    )
    with torch.no_grad():
        head.predictor.weight.copy_(torch.tensor([[0, 0, 0, 0, 1, 10, 100, 1000.0]]))
    mask = torch.tensor(
        [[[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7], [0.0, 0.0, 0.8, 0.1], [0.3, 0.0, 0.1, 0.2]]]
    )
    # pooled mask 2x2 = [[0.9, 0.7], [0.3, 0.8]], flattened after the feature channel
    assert head(torch.zeros(1, 1, 2, 2), mask).item() == pytest.approx(0.9 + 7 + 30 + 800, rel=1e-5)


def test_loss_uses_only_target_class_and_positive_targets():
    predicted = torch.rand(4, 3, requires_grad=True)
    classes = torch.tensor([0, 2, 1, 2])
    targets = torch.tensor([0.6, 0.0, 0.3, 0.8])  # a zero target is left out (strict > 0)
    loss = maskiou_loss(predicted, classes, targets)
    chosen = predicted[[0, 2, 3], [0, 1, 2]]
    expected = 0.5 * ((chosen - targets[[0, 2, 3]]) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    touched = predicted.grad != 0
    assert touched.sum() == 3 and touched[0, 0] and touched[2, 1] and touched[3, 2]
    exact = predicted.detach().clone()
    exact[[0, 2, 3], [0, 1, 2]] = targets[[0, 2, 3]]
    assert maskiou_loss(exact, classes, targets).item() == 0.0
    assert maskiou_loss(predicted, classes, torch.zeros(4)).item() == 0.0


def test_inference_multiplies_scores_by_class_iou():
    instances = [Instances((8, 8)), Instances((8, 8))]
    instances[0].scores, instances[0].pred_classes = torch.tensor([0.9, 0.5]), torch.tensor([1, 0])
    instances[1].scores, instances[1].pred_classes = torch.tensor([0.7]), torch.tensor([2])
    ious = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    maskiou_inference(ious, instances)
    torch.testing.assert_close(instances[0].mask_scores, torch.tensor([0.9 * 0.2, 0.5 * 0.4]))
    torch.testing.assert_close(instances[1].mask_scores, torch.tensor([0.7 * 0.9]))


def _batch(cfg, records):
    mapper = build_train_mapper(cfg)
    return [mapper(copy.deepcopy(r)) for r in records]


@pytest.fixture(scope="module")
def fixed_batch(synthetic_root):
    return _batch(
        load_config(MS_QUICKSTART, TINY_MS),
        DatasetCatalog.get("d2seg_synthetic_instance_train")[:2],
    )


def _record_inputs(module, store, names):
    """Keep the named positional inputs of each call of `module` in `store`."""
    module.register_forward_hook(lambda m, args, out: store.update(zip(names, args)))


def test_maskiou_head_reads_pooled_features_and_mask_probabilities(fixed_batch):
    """Training: the MaskIoU head gets the mask head's own input (RoIAlign features, FPN width)
    and the sigmoid of the ground-truth class's mask logits."""
    torch.manual_seed(0)
    model = build_model(load_config(MS_QUICKSTART, TINY_MS)).train()
    mask_head = model.roi_heads.mask_head
    seen = {}
    _record_inputs(mask_head, seen, ["pooled", "instances"])
    _record_inputs(mask_head.maskiou_head, seen, ["features", "probs"])
    mask_head.predictor.register_forward_hook(lambda m, args, out: seen.update(logits=out))
    with EventStorage(0):
        model(fixed_batch)
    assert seen["pooled"].shape[1:] == (FPN_WIDTH, 14, 14)
    assert torch.equal(seen["features"], seen["pooled"])
    gt_classes = torch.cat([x.gt_classes for x in seen["instances"]])
    logits = seen["logits"][torch.arange(len(gt_classes)), gt_classes]
    torch.testing.assert_close(seen["probs"], logits.sigmoid())


def _mask_layer_parameters(mask_head):
    return [p for n, p in mask_head.named_parameters() if not n.startswith("maskiou_head.")]


def _grad_norm(parameters):
    return sum(p.grad.abs().sum().item() for p in parameters if p.grad is not None)


@pytest.mark.parametrize("detach", [False, True])
def test_maskiou_gradient_reaches_mask_head_unless_detached(fixed_batch, detach):
    torch.manual_seed(0)
    cfg = load_config(MS_QUICKSTART, TINY_MS + ["MODEL.ROI_MASKIOU_HEAD.DETACH_INPUT", str(detach)])
    model = build_model(cfg).train()
    with EventStorage(0):
        losses = model(fixed_batch)
    assert losses["loss_maskiou"].item() > 0
    losses["loss_maskiou"].backward()
    mask_head = model.roi_heads.mask_head
    assert _grad_norm(mask_head.maskiou_head.parameters()) > 0
    upstream = (
        _grad_norm(_mask_layer_parameters(mask_head)),
        _grad_norm(model.backbone.parameters()),
    )
    assert (upstream == (0, 0)) if detach else min(upstream) > 0


def test_every_mask_head_parameter_gets_a_gradient_without_foreground(fixed_batch):
    """Only background proposals: the losses are zero, yet every parameter of the mask head,
    MaskIoU head included, has a gradient (DistributedDataParallel needs no unused-parameter
    search)."""
    torch.manual_seed(0)
    cfg = load_config(MS_QUICKSTART, TINY_MS + ["MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "False"])
    model = build_model(cfg).train()
    images = model.preprocess_image(fixed_batch)
    targets = [x["instances"] for x in fixed_batch]
    proposals = []
    for size, gt in zip(images.image_sizes, targets):
        xy = torch.cartesian_prod(torch.arange(0, 150, 10.0), torch.arange(0, 150, 10.0))
        boxes = Boxes(torch.cat([xy, xy + 6], dim=1))
        boxes = boxes[pairwise_iou(boxes, gt.gt_boxes).max(dim=1).values < 0.3]
        proposal = Instances(size, proposal_boxes=boxes, objectness_logits=torch.zeros(len(boxes)))
        proposals.append(proposal)
    assert min(len(p) for p in proposals) > 10
    with EventStorage(0):
        _, losses = model.roi_heads(images, model.backbone(images.tensor), proposals, targets)
    assert losses["loss_mask"].item() == 0 and losses["loss_maskiou"].item() == 0
    sum(losses.values()).backward()
    parameters = dict(model.roi_heads.mask_head.named_parameters())
    assert any(name.startswith("maskiou_head.") for name in parameters)
    assert [name for name, p in parameters.items() if p.grad is None] == []


def test_maskiou_head_learns_its_targets(fixed_batch):
    """The MaskIoU head alone, on one model forward's RoI features and mask logits: 30 SGD steps
    on the head's own loss halve it."""
    torch.manual_seed(0)
    model = build_model(load_config(MS_QUICKSTART, TINY_MS)).train()
    mask_head = model.roi_heads.mask_head
    seen = {}
    _record_inputs(mask_head, seen, ["pooled", "instances"])
    mask_head.predictor.register_forward_hook(lambda m, args, out: seen.update(logits=out))
    with EventStorage(0):
        model(fixed_batch)
    pooled, logits = seen["pooled"].detach(), seen["logits"].detach()
    optimizer = torch.optim.SGD(mask_head.maskiou_head.parameters(), lr=0.01, momentum=0.9)
    history = []
    for _ in range(30):
        loss = mask_head._maskiou_loss(pooled, logits, seen["instances"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * history[0], history


def _polygon_annotations_only(record):
    kept = dict(record)
    kept["annotations"] = [a for a in record["annotations"] if isinstance(a["segmentation"], list)]
    return kept


def test_polygon_masks_give_the_bitmask_targets_and_train(synthetic_root):
    """COCO's default polygon masks end to end, on RoIs that cut the objects: the in-box
    fractions equal the bitmasks' exactly; the targets differ only through Detectron2's own M x M
    ground-truth crop (polygons rasterised at 28 x 28, as the reference does, vs RoIAlign of the
    bitmask), by a few hundredths on small objects and under 0.015 on objects of 1000+ pixels.
    Then a polygon-format training step."""
    records = [
        _polygon_annotations_only(r)
        for r in DatasetCatalog.get("d2seg_synthetic_instance_train")[:8]
    ]
    batches = {
        fmt: _batch(load_config(MS_QUICKSTART, TINY_MS + ["INPUT.MASK_FORMAT", fmt]), records)
        for fmt in ("polygon", "bitmask")
    }
    assert isinstance(batches["polygon"][0]["instances"].gt_masks, PolygonMasks)
    generator = torch.Generator().manual_seed(0)
    targets, fractions = {"polygon": [], "bitmask": []}, {"polygon": [], "bitmask": []}
    areas = []
    for polygon_inputs, bitmask_inputs in zip(batches["polygon"], batches["bitmask"]):
        gt = {"polygon": polygon_inputs["instances"], "bitmask": bitmask_inputs["instances"]}
        box = gt["bitmask"].gt_boxes.tensor
        torch.testing.assert_close(gt["polygon"].gt_boxes.tensor, box)
        areas.append(gt["bitmask"].gt_masks.tensor.flatten(1).sum(dim=1))
        # RoIs 20% wider and 20% shorter than the objects, so parts of them lie outside
        boxes = box + (box[:, 2:] - box[:, :2]).repeat(1, 2) * torch.tensor([-0.2, 0.1, 0.2, -0.1])
        near_gt = gt["bitmask"].gt_masks.crop_and_resize(boxes, 28).float()
        logits = 4 * (near_gt - 0.5) + torch.randn(near_gt.shape, generator=generator)
        for fmt, instances in gt.items():
            fraction = gt_inbox_fraction(instances.gt_masks, boxes, instances.image_size)
            fractions[fmt].append(fraction)
            targets[fmt].append(
                mask_iou_targets(logits, instances.gt_masks.crop_and_resize(boxes, 28), fraction)
            )
    fraction = torch.cat(fractions["polygon"])
    assert (fraction < 0.98).all()
    assert torch.equal(fraction, torch.cat(fractions["bitmask"]))
    polygon, bitmask = torch.cat(targets["polygon"]), torch.cat(targets["bitmask"])
    large = torch.cat(areas) >= 1000
    assert large.sum() >= 5 and polygon.min() > 0.3
    torch.testing.assert_close(polygon, bitmask, atol=0.08, rtol=0)
    torch.testing.assert_close(polygon[large], bitmask[large], atol=0.015, rtol=0)

    torch.manual_seed(0)
    model = build_model(
        load_config(MS_QUICKSTART, TINY_MS + ["INPUT.MASK_FORMAT", "polygon"])
    ).train()
    with EventStorage(0):
        losses = model(batches["polygon"])
    assert losses["loss_maskiou"].item() > 0 and torch.isfinite(losses["loss_maskiou"])
    losses["loss_maskiou"].backward()
    assert _grad_norm(model.roi_heads.mask_head.maskiou_head.parameters()) > 0


def _run_roi_heads(model, images, proposal_boxes, indices):
    """ROI heads on chosen images with fixed proposals (so detection counts differ)."""
    batched = [{"image": images[i]} for i in indices]
    image_list = model.preprocess_image(batched)
    features = model.backbone(image_list.tensor)
    proposals = []
    for i, size in zip(indices, image_list.image_sizes):
        proposal = Instances(size)
        proposal.proposal_boxes = Boxes(proposal_boxes[i])
        proposal.objectness_logits = torch.zeros(len(proposal_boxes[i]))
        proposals.append(proposal)
    instances, _ = model.roi_heads(image_list, features, proposals)
    return instances


def test_batched_inference_equals_one_image_at_a_time():
    """Inference: mask_scores = scores x the MaskIoU of the predicted class, computed from the
    pooled features and the predicted mask probabilities, the same batched or image by image."""
    torch.manual_seed(0)
    cfg = load_config(
        MS_QUICKSTART,
        TINY_MS
        + [
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "INPUT.MAX_SIZE_TEST",
            "96",
        ],
    )
    model = build_model(cfg).eval()
    images = [torch.rand(3, 96, 96) * 255 for _ in range(3)]
    generator = torch.Generator().manual_seed(1)
    proposal_boxes = []
    for count in (2, 5, 9):
        xy = torch.rand(count, 2, generator=generator) * 60
        wh = 10 + torch.rand(count, 2, generator=generator) * 30
        proposal_boxes.append(torch.cat([xy, xy + wh], dim=1))
    mask_head = model.roi_heads.mask_head
    seen = {}
    _record_inputs(mask_head, seen, ["pooled"])
    _record_inputs(mask_head.maskiou_head, seen, ["features", "probs"])
    mask_head.maskiou_head.register_forward_hook(lambda m, args, out: seen.update(ious=out))
    with torch.no_grad():
        batched = _run_roi_heads(model, images, proposal_boxes, [0, 1, 2])
        first = dict(seen)
        singles = [_run_roi_heads(model, images, proposal_boxes, [i])[0] for i in range(3)]
    assert len({len(x) for x in batched}) == 3  # different detection counts per image
    assert torch.equal(first["features"], first["pooled"])
    torch.testing.assert_close(first["probs"], torch.cat([x.pred_masks[:, 0] for x in batched]))
    classes = torch.cat([x.pred_classes for x in batched])
    expected = (
        torch.cat([x.scores for x in batched]) * first["ious"][torch.arange(len(classes)), classes]
    )
    torch.testing.assert_close(torch.cat([x.mask_scores for x in batched]), expected)
    for together, alone in zip(batched, singles):
        assert len(together) == len(alone)
        torch.testing.assert_close(
            together.pred_boxes.tensor, alone.pred_boxes.tensor, atol=1e-3, rtol=1e-4
        )
        torch.testing.assert_close(together.mask_scores, alone.mask_scores, atol=1e-4, rtol=1e-4)


def test_cascade_rcnn_trains_a_step_and_predicts_mask_scores(fixed_batch):
    torch.manual_seed(0)
    cfg = load_config(MS_CASCADE, TINY_MS + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    model = build_model(cfg).train()
    assert type(model.roi_heads) is CascadeROIHeads
    maskiou_head = model.roi_heads.mask_head.maskiou_head
    before = [p.detach().clone() for p in maskiou_head.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with EventStorage(0):
        losses = model(fixed_batch)
    assert {"loss_cls_stage2", "loss_mask", "loss_maskiou"} <= set(losses)
    assert losses["loss_maskiou"].item() > 0
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, maskiou_head.parameters()))

    seen = {}
    maskiou_head.register_forward_hook(lambda m, args, out: seen.update(ious=out))
    with torch.no_grad():
        instances = model.eval()([{"image": fixed_batch[0]["image"]}])[0]["instances"]
    assert len(instances) > 0
    expected = instances.scores * seen["ious"][torch.arange(len(instances)), instances.pred_classes]
    torch.testing.assert_close(instances.mask_scores, expected)


class _FixedDetections(torch.nn.Module):
    """Stands in for the ROI heads: returns the same detections for every image."""

    def __init__(self, instances):
        super().__init__()
        self.instances = instances

    def forward(self, images, features, proposals, targets=None):
        return [self.instances] * len(proposals), {}


def _square_detections(size: int) -> Instances:
    """Four box-filling masks on a size x size image: A and B overlap (A ahead by score, B by
    mask score); C passes the 0.5 threshold only by score, D only by mask score."""
    h = size // 2
    detections = Instances((size, size))
    detections.pred_boxes = Boxes(
        torch.tensor(
            [[0, 0, 40, h], [20, 0, size, h], [0, h, h, size], [h, h, size, size]],
            dtype=torch.float32,
        )
    )
    detections.scores = torch.tensor([0.9, 0.8, 0.7, 0.3])
    detections.mask_scores = torch.tensor([0.6, 0.85, 0.3, 0.55])
    detections.pred_classes = torch.tensor([0, 1, 2, 0])
    detections.pred_masks = torch.ones(4, 1, 28, 28)
    return detections


def _instance_at(panoptic, y: int, x: int):
    """Index of the detection that owns pixel (y, x) of a panoptic output, else None."""
    ids, segments = panoptic
    by_id = {s["id"]: s for s in segments}
    segment = by_id.get(int(ids[y, x]))
    return segment["instance_id"] if segment and segment["isthing"] else None


@pytest.mark.parametrize("thresh_score", ["mask_scores", "scores"])
def test_panoptic_fpn_merge_ranks_by_mask_scores(thresh_score):
    """MaskScoringPanopticFPN.inference: overlaps go to the higher mask score, and
    INSTANCES_CONFIDENCE_THRESH (0.5, inclusive) applies to the configured score."""
    size = 64
    cfg = load_config(
        MS_PANOPTIC,
        TINY_MS
        + [
            "MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE",
            thresh_score,
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
            "0.55" if thresh_score == "mask_scores" else "0.7",
        ],
    )
    model = build_model(cfg).eval()
    detections = _square_detections(size)
    model.roi_heads = _FixedDetections(detections)
    with torch.no_grad():
        output = model([{"image": torch.rand(3, size, size) * 255, "height": size, "width": size}])[
            0
        ]
    owners = [
        _instance_at(output["panoptic_seg"], y, x)
        for y, x in [(10, 30), (10, 10), (48, 16), (48, 48)]
    ]
    assert owners[:2] == [1, 0]  # B took the overlap; A kept the rest (overlap 0.5, not > 0.5)
    assert owners[2:] == ([None, 3] if thresh_score == "mask_scores" else [2, None])
    torch.testing.assert_close(output["instances"].scores, detections.scores)
    torch.testing.assert_close(output["instances"].mask_scores, detections.mask_scores)


def test_unknown_panoptic_threshold_score_is_named():
    with pytest.raises(ValueError, match="PANOPTIC_THRESH_SCORE.*'iou'"):
        ranked_by_mask_scores(_square_detections(8), 0.5, "iou")
    with pytest.raises(ValueError, match="PANOPTIC_THRESH_SCORE"):
        build_model(
            load_config(
                MS_PANOPTIC, TINY_MS + ["MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE", "iou"]
            )
        )
