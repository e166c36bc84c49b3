"""Panoptic-DeepLab model: losses, backbone, training, and evaluation of its outputs."""

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_panoptic
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from PIL import Image

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from d2seg.data.panoptic_utils import rgb_to_id, standard_panoptic_metadata
from d2seg.data.targets.panoptic_deeplab import PanopticDeepLabTargetGenerator
from d2seg.modeling.meta_arch.panoptic_deeplab import deeplab_cross_entropy, weighted_mean
from d2seg.modeling.postprocessing.panoptic_deeplab import panoptic_deeplab_inference
from d2seg.solver import build_lr_scheduler, build_optimizer
from tests.modeling.test_configs import CONFIG_ROOT

QUICKSTART = str(CONFIG_ROOT / "quickstart" / "panoptic_deeplab_R_18_synthetic.yaml")
CITYSCAPES = str(CONFIG_ROOT / "Cityscapes-PanopticSegmentation" /
                 "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml")


def test_hard_pixel_mining_averages_the_top_k_pixel_losses():
    # 1 image, 2 classes, 5 pixels with known cross-entropies
    logits = torch.tensor([[0.0, 2.0, -1.0, 0.5, 3.0], [1.0, 0.0, 1.0, 0.5, 0.0]])[None, :, None]
    labels = torch.tensor([[[0, 0, 1, 1, 255]]])
    losses = torch.nn.functional.cross_entropy(logits[..., :4], labels[..., :4],
                                               reduction="none").flatten()
    expected_all = losses.sum() / 5  # the ignored pixel counts as 0, as in the reference
    assert deeplab_cross_entropy(logits, labels, None, 1.0, 255).item() == pytest.approx(
        expected_all.item())
    top2 = losses.sort(descending=True).values[:2].mean()
    assert deeplab_cross_entropy(logits, labels, None, 0.4, 255).item() == pytest.approx(
        top2.item())
    weights = torch.tensor([[[3.0, 1, 1, 1, 1]]])
    weighted = (losses * weights.flatten()[:4]).sum() / 5
    assert deeplab_cross_entropy(logits, labels, weights, 1.0, 255).item() == pytest.approx(
        weighted.item())


def test_center_and_offset_losses_average_over_weighted_pixels():
    errors = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    weights = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert weighted_mean(errors, weights).item() == pytest.approx(2.0)
    assert weighted_mean(errors, torch.zeros_like(weights)).item() == 0.0


def test_deeplab_backbone_layout():
    cfg = load_config(CITYSCAPES, ["MODEL.RESNETS.NORM", "BN", "MODEL.WEIGHTS", ""])
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert [c.out_channels for c in (backbone.stem.conv1, backbone.stem.conv2,
                                     backbone.stem.conv3)] == [64, 64, 128]
    assert [block.conv2.dilation for block in backbone.res5] == [(2, 2), (4, 4), (8, 8)]
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"res2": 4, "res3": 8, "res5": 16}
    outputs = backbone(torch.rand(1, 3, 64, 128))
    assert outputs["res5"].shape[-2:] == (4, 8)


def test_training_lowers_the_loss_with_adam_and_poly_schedule(synthetic_root):
    cfg = load_config(QUICKSTART, ["SOLVER.MAX_ITER", "15"])
    mapper = build_train_mapper(cfg)
    batch = [mapper(r) for r in DatasetCatalog.get("d2seg_synthetic_panoptic_train")[:2]]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    assert isinstance(optimizer, torch.optim.Adam)
    history = []
    with EventStorage(0):
        for _ in range(15):
            losses = model(batch)
            assert set(losses) == {"loss_sem_seg", "loss_center", "loss_offset"}
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            scheduler.step()
            history.append(total.item())
    assert sum(history[-3:]) / 3 < 0.6 * history[0], history
    # poly 0.9 from 0.002 with no warm-up: lr after 15 of 15 iterations is 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def _ground_truth_outputs(panoptic_png, segments_info, thing_ids, num_classes):
    """Semantic logits, centre heatmap and offsets made from a panoptic ground truth."""
    panoptic = rgb_to_id(np.asarray(Image.open(panoptic_png).convert("RGB")))
    targets = PanopticDeepLabTargetGenerator(frozenset(thing_ids))(panoptic, segments_info)
    semantic = targets["sem_seg"]
    labelled = semantic[semantic != 255]
    semantic = np.where(semantic == 255, np.bincount(labelled).argmax(), semantic)  # VOID
    return (torch.from_numpy(semantic), torch.from_numpy(targets["center"]),
            torch.from_numpy(targets["offset"]))


def _pq_of_ground_truth(dataset_name, records, output_dir):
    """Ground truth -> targets -> post-processing -> COCOPanopticEvaluator."""
    metadata = MetadataCatalog.get(dataset_name)
    thing_ids = sorted(metadata.thing_dataset_id_to_contiguous_id.values())
    evaluator = COCOPanopticEvaluator(dataset_name, str(output_dir))
    evaluator.reset()
    for record in records:
        semantic, center, offset = _ground_truth_outputs(
            record["pan_seg_file_name"], record["segments_info"], thing_ids,
            len(metadata.stuff_classes))
        panoptic, _ = panoptic_deeplab_inference(
            semantic, center, offset, thing_ids=torch.tensor(thing_ids),
            label_divisor=metadata.label_divisor, stuff_area=0, threshold=0.1, nms_kernel=3,
            top_k=200)
        evaluator.process([record], [{"panoptic_seg": (panoptic, None)}])
    return evaluator.evaluate()["panoptic_seg"]


def test_ground_truth_through_postprocessing_scores_pq_100_on_real_sample(coco_sample,
                                                                        tmp_path):
    name = "d2seg_test_pdl_coco_sample"
    if name not in DatasetCatalog.list():
        categories = json.loads((coco_sample / "panoptic_coco_categories.json").read_text())
        register_coco_panoptic(name, standard_panoptic_metadata(categories),
                               str(coco_sample / "input_images"),
                               str(coco_sample / "panoptic_examples"),
                               str(coco_sample / "panoptic_examples.json"))
    results = _pq_of_ground_truth(name, DatasetCatalog.get(name), tmp_path)
    assert results["PQ"] == pytest.approx(100.0)


def test_cityscapes_panoptic_split_and_evaluators(cityscapes_root, tmp_path):
    from d2seg.data.datasets.cityscapes import (
        cityscapes_panoptic_metadata,
        load_cityscapes_panoptic_split,
    )
    from d2seg.evaluation import build_evaluator
    from tests.helpers.scripts import load_script

    prepare = load_script("datasets/prepare_cityscapes.py")
    prepare.create_train_id_label_images(str(cityscapes_root), ["val"])
    prepare.create_panoptic_images(str(cityscapes_root), ["val"])  # cityscapesscripts' own
    gt = cityscapes_root / "gtFine"
    records = load_cityscapes_panoptic_split(
        str(cityscapes_root / "leftImg8bit" / "val"), str(gt / "val"),
        str(gt / "cityscapes_panoptic_val"), str(gt / "cityscapes_panoptic_val.json"))
    assert len(records) == 2 and all(r["segments_info"] for r in records)
    name = "d2seg_test_cityscapes_panoptic_val"
    MetadataCatalog.get(name).set(
        gt_dir=str(gt / "val"), panoptic_root=str(gt / "cityscapes_panoptic_val"),
        panoptic_json=str(gt / "cityscapes_panoptic_val.json"), label_divisor=1000,
        ignore_label=255, evaluator_type="cityscapes_panoptic_seg",
        **cityscapes_panoptic_metadata())
    assert _pq_of_ground_truth(name, records, tmp_path)["PQ"] == pytest.approx(100.0)
    cfg = load_config(CITYSCAPES, ["MODEL.WEIGHTS", ""])
    evaluators = build_evaluator(cfg, name, str(tmp_path))._evaluators
    assert [type(e).__name__ for e in evaluators] == [
        "COCOPanopticEvaluator", "CityscapesSemSegEvaluator", "CityscapesInstanceEvaluator"]
    # the semantic and instance evaluators on outputs made from the ground truth, with the
    # panoptic splits' train-id classes (11..18 for things): mIoU and AP 100
    _, semantic_evaluator, instance_evaluator = evaluators
    for evaluator in (semantic_evaluator, instance_evaluator):
        evaluator.reset()
    thing_ids = sorted(MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id.values())
    for record in records:
        panoptic = rgb_to_id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        semantic = torch.full(panoptic.shape, 0, dtype=torch.long)
        instances = Instances(panoptic.shape)
        masks, classes = [], []
        for segment in record["segments_info"]:
            mask = torch.from_numpy(panoptic == segment["id"])
            semantic[mask] = segment["category_id"]
            if segment["category_id"] in thing_ids and not segment["iscrowd"]:
                masks.append(mask)
                classes.append(segment["category_id"])
        instances.pred_masks = torch.stack(masks)
        instances.pred_classes = torch.tensor(classes)
        instances.scores = torch.ones(len(classes))
        logits = torch.nn.functional.one_hot(semantic, 19).permute(2, 0, 1).float()
        semantic_evaluator.process([record], [{"sem_seg": logits}])
        instance_evaluator.process([record], [{"instances": instances}])
    assert semantic_evaluator.evaluate()["sem_seg"]["IoU"] == pytest.approx(100.0)
    assert instance_evaluator.evaluate()["segm"]["AP"] == pytest.approx(100.0)


def test_offsets_are_rescaled_to_the_output_resolution(monkeypatch, synthetic_root):
    """An output twice the network input: offsets handed to post-processing double too."""
    import d2seg.modeling.meta_arch.panoptic_deeplab as module

    model = build_model(load_config(QUICKSTART)).eval()
    seen = {}

    def capture(sem_seg, center, offset, **kwargs):
        seen["offset"] = offset
        return panoptic_deeplab_inference(sem_seg, center, offset, **kwargs)

    monkeypatch.setattr(module, "panoptic_deeplab_inference", capture)
    sem_logits = torch.randn(6, 8, 16)
    offset = torch.randn(2, 8, 16)
    model._inference(sem_logits, torch.rand(1, 8, 16), offset, (8, 16),
                     {"height": 16, "width": 48})
    resized = torch.nn.functional.interpolate(offset[None], size=(16, 48), mode="bilinear",
                                              align_corners=False)[0]
    torch.testing.assert_close(seen["offset"][0], resized[0] * 2)
    torch.testing.assert_close(seen["offset"][1], resized[1] * 3)


@pytest.mark.parametrize("flip", ["horizontal", "none"])
def test_mapper_resizes_then_crops_then_flips(flip, synthetic_root):
    from detectron2.data import transforms as T

    cfg = load_config(QUICKSTART, ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "(64, 96)",
                                   "INPUT.RANDOM_FLIP", flip])
    mapper = build_train_mapper(cfg)
    kinds = [type(a) for a in mapper.augmentations.augs]
    expected = [T.ResizeShortestEdge, T.RandomCrop] + ([T.RandomFlip] if flip != "none" else [])
    assert kinds == expected
    record = DatasetCatalog.get("d2seg_synthetic_panoptic_train")[0]
    mapped = mapper(record)
    assert mapped["image"].shape[-2:] == (64, 96) == mapped["sem_seg"].shape


def test_mapper_names_an_unreadable_panoptic_png(synthetic_root, tmp_path):
    from d2seg.data.mappers.base import DatasetFileError

    broken = tmp_path / "broken_panoptic.png"
    broken.write_bytes(b"not a png")
    record = dict(DatasetCatalog.get("d2seg_synthetic_panoptic_train")[0],
                  pan_seg_file_name=str(broken))
    with pytest.raises(DatasetFileError, match="broken_panoptic.png"):
        build_train_mapper(load_config(QUICKSTART))(record)
