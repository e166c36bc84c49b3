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
from detectron2.projects.panoptic_deeplab.target_generator import PanopticDeepLabTargetGenerator
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from panopticapi.utils import rgb2id
from PIL import Image

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from d2seg.data.panoptic_utils import standard_panoptic_metadata
from d2seg.modeling.panoptic_deeplab.postprocessing import panoptic_deeplab_inference
from d2seg.solver import build_lr_scheduler, build_optimizer
from tests.helpers.configs import CONFIG_ROOT

QUICKSTART = str(CONFIG_ROOT / "quickstart" / "panoptic_deeplab_R_18_synthetic.yaml")
CITYSCAPES = str(
    CONFIG_ROOT
    / "Cityscapes-PanopticSegmentation"
    / "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml"
)


def _heads(top_k: float = 0.2):
    cfg = load_config(QUICKSTART, ["MODEL.SEM_SEG_HEAD.PANOPTIC_DEEPLAB.LOSS_TOP_K", str(top_k)])
    model = build_model(cfg)
    return cfg, model.sem_seg_head, model.ins_embed_head


def test_paper_constants_are_the_defaults():
    """Sec. 3.2 / 3.4 of the paper and the reference configs."""
    cfg = load_config(CITYSCAPES, ["MODEL.WEIGHTS", ""])
    head, ins, pdl = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.INS_EMBED_HEAD, cfg.MODEL.PANOPTIC_DEEPLAB
    assert (ins.CENTER_LOSS_WEIGHT, ins.OFFSET_LOSS_WEIGHT) == (200.0, 0.01)
    branch = head.PANOPTIC_DEEPLAB
    assert (branch.LOSS_TYPE, branch.LOSS_TOP_K) == ("hard_pixel_mining", 0.2)
    assert (branch.ASPP_CHANNELS, head.CONVS_DIM, branch.HEAD_CHANNELS) == (256, 256, 256)
    assert (ins.ASPP_CHANNELS, ins.CONVS_DIM, ins.HEAD_CHANNELS) == (256, 128, 32)
    assert (list(branch.PROJECT_CHANNELS), list(ins.PROJECT_CHANNELS)) == ([32, 64], [16, 32])
    assert list(head.ASPP.DILATIONS) == list(ins.ASPP_DILATIONS) == [6, 12, 18]
    assert (
        cfg.INPUT.GAUSSIAN_SIGMA,
        cfg.INPUT.SMALL_INSTANCE_AREA,
        cfg.INPUT.SMALL_INSTANCE_WEIGHT,
    ) == (8.0, 4096, 3)
    assert (pdl.STUFF_AREA, pdl.CENTER_THRESHOLD, pdl.NMS_KERNEL, pdl.TOP_K_INSTANCE) == (
        2048,
        0.1,
        7,
        200,
    )
    assert (pdl.HEAD_LAYOUT, pdl.ASPP_POOLING) == ("authors", "global")
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.POLY_LR_POWER) == (
        "ADAM",
        0.001,
        0.9,
    )


def test_semantic_loss_is_weighted_hard_pixel_mining_at_full_resolution():
    """Predictions at stride 4 are upsampled x4 (bilinear), per-pixel CE x weight, ignored
    pixels count as 0, and the mean is over the top 20% of all pixels (int(0.2 n))."""
    _, semantic, _ = _heads(0.2)
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5, 7)
    labels = torch.randint(0, 6, (2, 20, 28))
    labels[0, :3] = 255
    weights = torch.ones(2, 20, 28)
    weights[1, 5:9, 5:9] = 3.0
    loss = semantic.losses(logits, labels, weights)["loss_sem_seg"]
    full = torch.nn.functional.interpolate(
        logits, scale_factor=4, mode="bilinear", align_corners=False
    )
    per_pixel = []
    for n in range(2):
        for y in range(20):
            for x in range(28):
                label = int(labels[n, y, x])
                value = (
                    0.0
                    if label == 255
                    else float(-torch.log_softmax(full[n, :, y, x], 0)[label] * weights[n, y, x])
                )
                per_pixel.append(value)
    kept = sorted(per_pixel, reverse=True)[: int(0.2 * len(per_pixel))]
    assert loss.item() == pytest.approx(sum(kept) / len(kept), rel=1e-5)


def test_center_and_offset_losses_average_over_the_weight_mass():
    """Centre: MSE x weight / sum(weight) x 200. Offset: predictions upsampled x4 and scaled x4,
    L1 over both channels x weight / sum(weight) (pixels, not pixels x 2) x 0.01."""
    _, _, instance = _heads()
    torch.manual_seed(0)
    center, offset = torch.rand(1, 1, 3, 4), torch.randn(1, 2, 3, 4)
    center_target, offset_target = torch.rand(1, 1, 12, 16), torch.randn(1, 2, 12, 16) * 4
    weights = (torch.rand(1, 1, 12, 16) > 0.5).float()
    up = torch.nn.functional.interpolate
    center_up = up(center, scale_factor=4, mode="bilinear", align_corners=False)
    offset_up = up(offset, scale_factor=4, mode="bilinear", align_corners=False) * 4
    expected_center = ((center_up - center_target) ** 2 * weights).sum() / weights.sum() * 200
    expected_offset = ((offset_up - offset_target).abs() * weights).sum() / weights.sum() * 0.01
    got_center = instance.center_losses(center, center_target, weights)["loss_center"]
    got_offset = instance.offset_losses(offset, offset_target, weights)["loss_offset"]
    torch.testing.assert_close(got_center, expected_center)
    torch.testing.assert_close(got_offset, expected_offset)
    zero = torch.zeros_like(weights)
    assert instance.center_losses(center, center_target, zero)["loss_center"].item() == 0.0


def test_deeplab_backbone_layout():
    cfg = load_config(CITYSCAPES, ["MODEL.RESNETS.NORM", "BN", "MODEL.WEIGHTS", ""])
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert [
        c.out_channels for c in (backbone.stem.conv1, backbone.stem.conv2, backbone.stem.conv3)
    ] == [64, 64, 128]
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
    panoptic = rgb2id(np.asarray(Image.open(panoptic_png).convert("RGB")))
    targets = PanopticDeepLabTargetGenerator(255, thing_ids)(panoptic, segments_info)
    semantic = targets["sem_seg"]
    labelled = semantic[semantic != 255]
    semantic = torch.where(semantic == 255, torch.bincount(labelled).argmax(), semantic)  # VOID
    return semantic, targets["center"][None], targets["offset"]


def _pq_of_ground_truth(dataset_name, records, output_dir):
    """Ground truth -> targets -> post-processing -> COCOPanopticEvaluator."""
    metadata = MetadataCatalog.get(dataset_name)
    thing_ids = sorted(metadata.thing_dataset_id_to_contiguous_id.values())
    evaluator = COCOPanopticEvaluator(dataset_name, str(output_dir))
    evaluator.reset()
    for record in records:
        semantic, center, offset = _ground_truth_outputs(
            record["pan_seg_file_name"],
            record["segments_info"],
            thing_ids,
            len(metadata.stuff_classes),
        )
        panoptic, _ = panoptic_deeplab_inference(
            semantic,
            center,
            offset,
            thing_ids=torch.tensor(thing_ids),
            label_divisor=metadata.label_divisor,
            stuff_area=0,
            threshold=0.1,
            nms_kernel=3,
            top_k=200,
        )
        evaluator.process([record], [{"panoptic_seg": (panoptic, None)}])
    return evaluator.evaluate()["panoptic_seg"]


def test_ground_truth_through_postprocessing_scores_pq_100_on_real_sample(coco_sample, tmp_path):
    name = "d2seg_test_pdl_coco_sample"
    if name not in DatasetCatalog.list():
        categories = json.loads((coco_sample / "panoptic_coco_categories.json").read_text())
        register_coco_panoptic(
            name,
            standard_panoptic_metadata(categories),
            str(coco_sample / "input_images"),
            str(coco_sample / "panoptic_examples"),
            str(coco_sample / "panoptic_examples.json"),
        )
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
        str(cityscapes_root / "leftImg8bit" / "val"),
        str(gt / "val"),
        str(gt / "cityscapes_panoptic_val"),
        str(gt / "cityscapes_panoptic_val.json"),
    )
    assert len(records) == 2 and all(r["segments_info"] for r in records)
    name = "d2seg_test_cityscapes_panoptic_val"
    MetadataCatalog.get(name).set(
        gt_dir=str(gt / "val"),
        panoptic_root=str(gt / "cityscapes_panoptic_val"),
        panoptic_json=str(gt / "cityscapes_panoptic_val.json"),
        label_divisor=1000,
        ignore_label=255,
        evaluator_type="cityscapes_panoptic_seg",
        **cityscapes_panoptic_metadata(),
    )
    assert _pq_of_ground_truth(name, records, tmp_path)["PQ"] == pytest.approx(100.0)
    cfg = load_config(CITYSCAPES, ["MODEL.WEIGHTS", ""])
    evaluators = build_evaluator(cfg, name, str(tmp_path))._evaluators
    assert [type(e).__name__ for e in evaluators] == [
        "FastCOCOPanopticEvaluator",
        "CityscapesSemSegEvaluator",
        "CityscapesInstanceEvaluator",
    ]
    # the semantic and instance evaluators on outputs made from the ground truth, with the
    # panoptic splits' train-id classes (11..18 for things): mIoU and AP 100
    _, semantic_evaluator, instance_evaluator = evaluators
    for evaluator in (semantic_evaluator, instance_evaluator):
        evaluator.reset()
    thing_ids = sorted(MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id.values())
    for record in records:
        panoptic = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
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
    import d2seg.modeling.panoptic_deeplab.meta_arch as module

    model = build_model(load_config(QUICKSTART)).eval()
    seen = {}

    def capture(sem_seg, center, offset, **kwargs):
        seen["offset"] = offset
        return panoptic_deeplab_inference(sem_seg, center, offset, **kwargs)

    monkeypatch.setattr(module, "panoptic_deeplab_inference", capture)
    sem_logits = torch.randn(6, 8, 16)
    offset = torch.randn(2, 8, 16)
    model._inference(sem_logits, torch.rand(1, 8, 16), offset, (8, 16), {"height": 16, "width": 48})
    resized = torch.nn.functional.interpolate(
        offset[None], size=(16, 48), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(seen["offset"][0], resized[0] * 2)
    torch.testing.assert_close(seen["offset"][1], resized[1] * 3)


@pytest.mark.parametrize("flip", ["horizontal", "none"])
def test_mapper_resizes_then_crops_then_flips(flip, synthetic_root):
    from detectron2.data import transforms as T

    cfg = load_config(
        QUICKSTART,
        ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "(64, 96)", "INPUT.RANDOM_FLIP", flip],
    )
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
    record = dict(
        DatasetCatalog.get("d2seg_synthetic_panoptic_train")[0], pan_seg_file_name=str(broken)
    )
    with pytest.raises(DatasetFileError, match="broken_panoptic.png"):
        build_train_mapper(load_config(QUICKSTART))(record)


PANOPTIC_DEEPLAB_CONFIGS = sorted(
    str(p) for p in CONFIG_ROOT.rglob("panoptic_deeplab*.yaml") if "quickstart" not in str(p)
)


@pytest.mark.parametrize("config", PANOPTIC_DEEPLAB_CONFIGS, ids=lambda p: p.split("/")[-1])
def test_training_batches_are_not_padded_beyond_the_crop(config):
    """A crop-sized batch keeps its size through the model's padding (SIZE_DIVISIBILITY 1024
    once padded Cityscapes' 512 x 1024 crops to 1024 x 1024)."""
    from detectron2.structures import ImageList

    cfg = load_config(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    assert cfg.INPUT.CROP.ENABLED
    crop = tuple(cfg.INPUT.CROP.SIZE)
    model = build_model(cfg)
    padded = ImageList.from_tensors([torch.zeros(3, *crop)] * 2, model.size_divisibility)
    assert tuple(padded.tensor.shape[-2:]) == crop


def test_instance_score_is_mean_class_probability_times_centre_heat_at_the_centroid():
    """The reference's score: mean of the predicted class's probability over the mask times the
    centre heatmap at the mask's centroid, truncated to integer pixels."""
    model = build_model(load_config(QUICKSTART))
    label_divisor = model.label_divisor
    panoptic = torch.full((6, 8), 3 * label_divisor, dtype=torch.long)  # stuff class 3
    panoptic[0:3, 0:3] = 1 * label_divisor + 1  # centroid (1, 1)
    panoptic[2:6, 4:7] = 2 * label_divisor + 1  # centroid (3.5, 5) -> (3, 5)
    probabilities = torch.rand(6, 6, 8).softmax(dim=0)
    heatmap = torch.rand(6, 8)
    instances = model._instances(panoptic, probabilities, heatmap)
    assert instances.pred_classes.tolist() == [1, 2]
    first = probabilities[1, 0:3, 0:3].mean() * heatmap[1, 1]
    second = probabilities[2, 2:6, 4:7].mean() * heatmap[3, 5]
    torch.testing.assert_close(instances.scores, torch.stack([first, second]))
    assert instances.pred_boxes.tensor.tolist() == [[0, 0, 3, 3], [4, 2, 7, 6]]
