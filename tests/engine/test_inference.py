"""Inference options (TEST.AMP, TEST.CHANNELS_LAST, TEST.IMS_PER_BATCH): each is applied where
the config asks, outputs stay float32 and close to the plain float32 forward, and a batch gives
what its images give one at a time."""

from __future__ import annotations

import pytest
import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model

from d2seg.config import load_config
from d2seg.engine import D2SegTrainer, optimized_inference
from tests.helpers.configs import CONFIG_ROOT, TINY_RCNN, tiny_sem_seg_overrides

SEM_SEG = "Cityscapes-SemanticSegmentation/pspnet_R_50_D8_512x1024_80k.yaml"
RCNN = "COCO-InstanceSegmentation/mask_scoring_rcnn_R_50_FPN_1x.yaml"
BF16 = ["TEST.AMP.ENABLED", "True", "TEST.AMP.DTYPE", "bfloat16"]
CHANNELS_LAST = ["TEST.CHANNELS_LAST", "True"]
# random weights: a low threshold and few classes so that the R-CNN detects something
RCNN_DETECTS = ["MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def sem_seg_cfg(extra: list[str] = ()):
    return load_config(str(CONFIG_ROOT / SEM_SEG), tiny_sem_seg_overrides(SEM_SEG) + list(extra))


def rcnn_cfg(extra: list[str] = ()):
    return load_config(str(CONFIG_ROOT / RCNN), TINY_RCNN + RCNN_DETECTS + list(extra))


def build(cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for module in model.modules():  # BN statistics that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def images(*sizes: tuple[int, int], seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randint(0, 256, (3, h, w), generator=generator).float(),
            "height": h,
            "width": w,
        }
        for h, w in sizes
    ]


def run(cfg, model, inputs):
    with optimized_inference(cfg, model) as inference_model, torch.no_grad():
        return inference_model(inputs)


def record_conv_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    """Inputs of every 2-D convolution of `model` during the next forwards."""
    seen: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    return seen


def record_conv_outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    """Outputs of every 2-D convolution of `model` during the next forwards (the first conv's
    input is the float32 image; autocast casts inside the conv)."""
    seen: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _, args, output: seen.append(output))
    return seen


def float_tensors(output: dict) -> dict[str, torch.Tensor]:
    instances = output["instances"]
    fields = {"pred_boxes": instances.pred_boxes.tensor}
    fields |= {k: v for k, v in instances.get_fields().items() if isinstance(v, torch.Tensor)}
    return {k: v for k, v in fields.items() if v.is_floating_point()}


def test_bf16_autocast_runs_the_convs_in_bf16_and_returns_float32_close_to_fp32():
    model = build(sem_seg_cfg())
    inputs = images((64, 96))
    reference = run(sem_seg_cfg(), model, inputs)[0]["sem_seg"]
    seen = record_conv_outputs(model)
    output = run(sem_seg_cfg(BF16), model, inputs)[0]["sem_seg"]
    assert {x.dtype for x in seen} == {torch.bfloat16}
    assert output.dtype == torch.float32
    # softmax probabilities; bf16 keeps 8 bits of mantissa
    torch.testing.assert_close(output, reference, atol=0.03, rtol=0)
    assert not torch.equal(output, reference)


def test_bf16_autocast_gives_float32_rcnn_outputs():
    cfg = rcnn_cfg(BF16)
    model = build(cfg)
    seen = record_conv_outputs(model.roi_heads.mask_head)
    outputs = run(cfg, model, images((128, 160)))
    assert len(outputs[0]["instances"]) > 0
    assert {x.dtype for x in seen} == {torch.bfloat16}
    fields = float_tensors(outputs[0])
    assert {"pred_boxes", "scores", "mask_scores"} <= set(fields)
    assert outputs[0]["instances"].pred_masks.dtype == torch.bool  # pasted, thresholded
    assert {v.dtype for v in fields.values()} == {torch.float32}


def test_channels_last_converts_the_convolutions_and_restores_the_layout():
    model = build(sem_seg_cfg())
    inputs = images((64, 96))
    reference = run(sem_seg_cfg(), model, inputs)[0]["sem_seg"]
    seen = record_conv_inputs(model.backbone)
    output = run(sem_seg_cfg(CHANNELS_LAST), model, inputs)[0]["sem_seg"]
    # every conv after the stem's first reads an NHWC map (the image itself stays NCHW)
    assert seen[1:] and all(x.is_contiguous(memory_format=torch.channels_last) for x in seen[1:])
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, reference, atol=1e-5, rtol=1e-4)
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous() for w in weights)  # back to the layout training uses


def test_plain_config_leaves_the_model_alone():
    model = build(sem_seg_cfg())
    with optimized_inference(sem_seg_cfg(), model) as inference_model:
        assert inference_model is model


@pytest.mark.parametrize("key,value", [("TEST.AMP.DTYPE", "float32"), ("TEST.IMS_PER_BATCH", "0")])
def test_bad_values_are_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        sem_seg_cfg([key, value])


def test_semantic_batch_equals_images_one_at_a_time():
    model = build(sem_seg_cfg())
    inputs = images((64, 96), (64, 96), (96, 64))  # two share a size, one does not
    batched = run(sem_seg_cfg(), model, inputs)
    for one, alone in zip(inputs, batched):
        torch.testing.assert_close(alone["sem_seg"], run(sem_seg_cfg(), model, [one])[0]["sem_seg"])


def test_rcnn_batch_of_same_sized_images_equals_images_one_at_a_time():
    """Detectron2 pads a batch to its largest image; images of one size need no padding, so
    each gets the detections it gets alone."""
    cfg = rcnn_cfg()
    model = build(cfg)
    inputs = images((128, 160), (128, 160))
    batched = run(cfg, model, inputs)
    for one, result in zip(inputs, batched):
        alone = float_tensors(run(cfg, model, [one])[0])
        together = float_tensors(result)
        assert len(result["instances"]) > 0
        for key in alone:
            # batched convolutions sum in another order: boxes move by < 1e-3 px
            torch.testing.assert_close(together[key], alone[key], atol=1e-3, rtol=1e-3)


class DtypeRecorder(DatasetEvaluator):
    def __init__(self):
        self.dtypes: set[torch.dtype] = set()
        self.batch_sizes: list[int] = []

    def reset(self):
        self.dtypes.clear()

    def process(self, inputs, outputs):
        self.batch_sizes.append(len(inputs))
        self.dtypes |= {o["sem_seg"].dtype for o in outputs}

    def evaluate(self):
        return {}


def test_trainer_test_runs_with_the_configured_options(monkeypatch):
    cfg = sem_seg_cfg(BF16 + CHANNELS_LAST + ["TEST.IMS_PER_BATCH", "2"])
    model = build(cfg)
    loader_args = {}

    def fake_loader(cfg, dataset_name, **kwargs):
        loader_args.update(kwargs)
        return [images((64, 96), (64, 96))]

    monkeypatch.setattr("d2seg.engine.trainer.build_detection_test_loader", fake_loader)
    seen = record_conv_outputs(model)
    evaluator = DtypeRecorder()
    D2SegTrainer.test(cfg, model, [evaluator] * len(cfg.DATASETS.TEST))
    assert loader_args["batch_size"] == 2
    assert evaluator.batch_sizes == [2] * len(cfg.DATASETS.TEST)
    assert evaluator.dtypes == {torch.float32}
    assert {x.dtype for x in seen} == {torch.bfloat16}
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in seen)
