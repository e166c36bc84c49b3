"""Mask Scoring R-CNN: head layout, loss, gradients, inference, evaluation protocol, training."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from d2seg.evaluation import D2SegCOCOEvaluator
from d2seg.modeling.meta_arch.mask_scoring_panoptic_fpn import _ranked_by_mask_scores
from d2seg.modeling.roi_heads import MaskIoUHead, maskiou_inference, maskiou_loss
from tests.helpers.gt_predictions import instances_from_record
from tests.modeling.test_configs import CONFIG_ROOT, TINY_RCNN

MS_QUICKSTART = str(CONFIG_ROOT / "quickstart" / "mask_scoring_rcnn_R_18_FPN_synthetic.yaml")


def test_head_layout_and_init_follow_the_reference():
    head = MaskIoUHead(input_shape=ShapeSpec(channels=256, height=14, width=14), num_classes=80,
                       conv_dim=256, num_conv=4, fc_dim=1024, num_fc=2)
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [257, 256, 256, 256]  # features + mask channel
    assert [c.stride for c in convs] == [(1, 1), (1, 1), (1, 1), (2, 2)]
    fcs = [m for m in head.fcs if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 7 * 7, 1024), (1024, 1024)]
    assert head.predictor.out_features == 80
    assert head.predictor.weight.std().item() == pytest.approx(0.01, rel=0.05)
    for layer in convs + fcs + [head.predictor]:
        assert layer.bias.abs().sum() == 0
    # kaiming-normal fan_out (ReLU gain): std = sqrt(2 / (out_channels * 3 * 3))
    assert convs[0].weight.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)
    out = head(torch.randn(5, 256, 14, 14), torch.rand(5, 28, 28))
    assert out.shape == (5, 80)


def test_mask_input_is_max_pooled():
    head = MaskIoUHead(input_shape=ShapeSpec(channels=1, height=2, width=2), num_classes=1,
                       conv_dim=1, num_conv=0, fc_dim=1, num_fc=0)
    with torch.no_grad():
        head.predictor.weight.copy_(torch.tensor([[0, 0, 0, 0, 1, 10, 100, 1000.0]]))
    mask = torch.tensor([[[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7],
                          [0.0, 0.0, 0.8, 0.1], [0.3, 0.0, 0.1, 0.2]]])
    # pooled mask 2x2 = [[0.9, 0.7], [0.3, 0.8]], flattened after the feature channel
    assert head(torch.zeros(1, 1, 2, 2), mask).item() == pytest.approx(
        0.9 + 7 + 30 + 800, rel=1e-5)


def test_loss_uses_only_target_class_and_positive_targets():
    predicted = torch.rand(4, 3, requires_grad=True)
    classes = torch.tensor([0, 2, 1, 2])
    targets = torch.tensor([0.6, 0.0, 0.3, 0.8])
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


@pytest.fixture(scope="module")
def fixed_batch(synthetic_root):
    cfg = load_config(MS_QUICKSTART, TINY_RCNN)
    mapper = build_train_mapper(cfg)
    return [mapper(r) for r in DatasetCatalog.get("d2seg_synthetic_instance_train")[:2]]


@pytest.mark.parametrize("detach", [False, True])
def test_maskiou_gradient_reaches_mask_head_unless_detached(fixed_batch, detach):
    torch.manual_seed(0)
    cfg = load_config(MS_QUICKSTART, TINY_RCNN + ["MODEL.ROI_MASKIOU_HEAD.DETACH_INPUT",
                                                str(detach)])
    model = build_model(cfg).train()
    with EventStorage(0):
        losses = model(fixed_batch)
    assert losses["loss_maskiou"].item() > 0
    losses["loss_maskiou"].backward()

    def grad_norm(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.roi_heads.maskiou_head) > 0
    if detach:
        assert grad_norm(model.roi_heads.mask_head) == 0 and grad_norm(model.backbone) == 0
    else:
        assert grad_norm(model.roi_heads.mask_head) > 0 and grad_norm(model.backbone) > 0


def test_training_lowers_maskiou_loss(fixed_batch):
    torch.manual_seed(0)
    cfg = load_config(MS_QUICKSTART, TINY_RCNN + ["SOLVER.BASE_LR", "0.01"])
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    with EventStorage(0):
        for _ in range(25):
            losses = model(fixed_batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            history.append(losses["loss_maskiou"].item())
    assert sum(history[-5:]) / 5 < 0.5 * history[0], history


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
    torch.manual_seed(0)
    cfg = load_config(MS_QUICKSTART, TINY_RCNN + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                                "INPUT.MIN_SIZE_TEST", "96",
                                                "INPUT.MAX_SIZE_TEST", "96"])
    model = build_model(cfg).eval()
    images = [torch.rand(3, 96, 96) * 255 for _ in range(3)]
    generator = torch.Generator().manual_seed(1)
    proposal_boxes = []
    for count in (2, 5, 9):
        xy = torch.rand(count, 2, generator=generator) * 60
        wh = 10 + torch.rand(count, 2, generator=generator) * 30
        proposal_boxes.append(torch.cat([xy, xy + wh], dim=1))
    captured = []
    model.roi_heads.maskiou_head.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        batched = _run_roi_heads(model, images, proposal_boxes, [0, 1, 2])
        singles = [_run_roi_heads(model, images, proposal_boxes, [i])[0] for i in range(3)]
    assert len({len(x) for x in batched}) == 3  # different detection counts per image
    ious = captured[0]
    classes = torch.cat([x.pred_classes for x in batched])
    expected = torch.cat([x.scores for x in batched]) * ious[torch.arange(len(classes)), classes]
    torch.testing.assert_close(torch.cat([x.mask_scores for x in batched]), expected)
    for together, alone in zip(batched, singles):
        assert len(together) == len(alone)
        torch.testing.assert_close(together.pred_boxes.tensor, alone.pred_boxes.tensor,
                                   atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(together.mask_scores, alone.mask_scores, atol=1e-4, rtol=1e-4)


def test_coco_evaluation_ranks_boxes_by_scores_and_masks_by_mask_scores(synthetic_root, tmp_path):
    """Ground truth as detections, plus one wrong-class duplicate per image whose box score is
    low but whose mask score is high: box AP stays 100, mask AP drops."""
    records = DatasetCatalog.get("d2seg_synthetic_instance_val")
    evaluator = D2SegCOCOEvaluator("d2seg_synthetic_instance_val", output_dir=str(tmp_path))
    evaluator.reset()
    written_mask_scores = []
    for record in records:
        gt = instances_from_record(record)
        wrong = gt[:1]
        wrong.pred_classes = (wrong.pred_classes + 1) % 3
        predicted = Instances.cat([gt, wrong])
        predicted.scores = torch.cat([torch.ones(len(gt)), torch.full((1,), 0.01)])
        predicted.mask_scores = torch.cat([torch.full((len(gt),), 0.9), torch.full((1,), 0.99)])
        written_mask_scores += predicted.mask_scores.tolist()
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": predicted}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] < 90.0
    bbox = json.loads((tmp_path / "coco_bbox_results.json").read_text())
    segm = json.loads((tmp_path / "coco_segm_results.json").read_text())
    assert sorted({r["score"] for r in bbox}) == pytest.approx([0.01, 1.0])
    assert sorted(r["score"] for r in segm) == pytest.approx(sorted(written_mask_scores))
    assert all("segmentation" in r for r in segm) and all("mask_score" not in r for r in bbox)


def test_panoptic_merge_prefers_higher_mask_score():
    instances = Instances((4, 4))
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :, :3] = True  # both cover columns 1-2
    masks[1, :, 1:] = True
    instances.pred_masks = masks
    instances.pred_classes = torch.tensor([0, 1])
    instances.pred_boxes = Boxes(torch.tensor([[0, 0, 3, 4], [1, 0, 4, 4.0]]))
    instances.scores = torch.tensor([0.9, 0.8])
    instances.mask_scores = torch.tensor([0.6, 0.85])
    semantic = torch.zeros(4, 4, dtype=torch.long)
    by_score, info = combine_semantic_and_instance_outputs(instances, semantic, 0.0, 0, 0.5)
    by_mask_score, info_ms = combine_semantic_and_instance_outputs(
        _ranked_by_mask_scores(instances), semantic, 0.0, 0, 0.5)
    first_by_score = {s["id"]: s["instance_id"] for s in info}[int(by_score[0, 1])]
    first_by_mask = {s["id"]: s["instance_id"] for s in info_ms}[int(by_mask_score[0, 1])]
    assert (first_by_score, first_by_mask) == (0, 1)
    assert instances.scores.tolist() == pytest.approx([0.9, 0.8])  # the view leaves them alone
