#!/usr/bin/env python
"""Inference speed of any d2seg config: ms / image, images / s, peak memory and FLOPs.

    python benchmarks/inference_speed.py --config-file C [--device cuda|cpu] [--amp bf16|fp16]
        [--channels-last] [--cudnn-benchmark] [--batch N] [--detections N]
        [--height H --width W] [--warmup K --repeats R] [--json PATH] [KEY VALUE ...]

The model is built with random weights. Each repeat times one forward of `--batch` random
images of H x W (default: MIN_SIZE_TEST x MAX_SIZE_TEST) after `--warmup` untimed ones; the
table gives the median and the spread (min, interquartile range, max) over the repeats. On
CUDA every forward is bracketed by ``torch.cuda.synchronize()``. Memory: on CUDA
``torch.cuda.max_memory_allocated`` over the timed forwards (weights included); on CPU the
growth of the process's peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` before each model's runs) above its resident set at that point. FLOPs:
``torch.utils.flop_counter.FlopCounterMode`` over one forward (a multiply-add counts 2), per
image.

The options are the config's inference options (d2seg.engine.inference): ``--amp`` sets
TEST.AMP, ``--channels-last`` TEST.CHANNELS_LAST and ``--cudnn-benchmark`` Detectron2's
CUDNN_BENCHMARK, and the model runs through the same code as in evaluation.

- Panoptic-DeepLab configs (D2SegPanopticDeepLab): Detectron2's project model
  (``detectron2.projects.panoptic_deeplab``) is built from the same keys, its random weights are
  loaded into d2seg's model where the two layouts agree (d2seg's authors-layout DSConv centre
  head differs), and both are timed; the table ends with the ratio d2seg / project.
- R-CNN configs (GeneralizedRCNN): random weights yield no detections at a realistic score
  threshold, so ``--detections N`` runs the backbone, the RPN and the box head as usual, then
  replaces the box head's detections with N fixed boxes per image, which go through the mask /
  MaskIoU / parsing heads (``roi_heads.forward_with_given_boxes``) and Detectron2's
  ``detector_postprocess``, all timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import GeneralizedRCNN, PanopticFPN, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from d2seg.config import load_config
from d2seg.engine.inference import optimized_inference

AMP_NAMES = {"bf16": "bfloat16", "fp16": "float16"}
# depths of detectron2/projects/deeplab/resnet.py's build_resnet_deeplab_backbone
PROJECT_RESNET_DEPTHS = (50, 101, 152)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=sorted(AMP_NAMES), help="TEST.AMP with this dtype")
    parser.add_argument("--channels-last", action="store_true", help="TEST.CHANNELS_LAST")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="CUDNN_BENCHMARK")
    parser.add_argument("--batch", type=int, default=1, help="images per forward")
    parser.add_argument("--detections", type=int, help="R-CNN: exactly N detections per image")
    parser.add_argument("--height", type=int, help="default: INPUT.MIN_SIZE_TEST")
    parser.add_argument("--width", type=int, help="default: INPUT.MAX_SIZE_TEST")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch and --repeats must be >= 1, --warmup >= 0")
    if args.detections is not None and args.detections < 1:
        parser.error("--detections must be >= 1")
    return args


def benchmark_config(args: argparse.Namespace) -> CfgNode:
    """The config with the device, no weights file, and the chosen inference options."""
    options = ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", ""]
    if args.amp:
        options += ["TEST.AMP.ENABLED", "True", "TEST.AMP.DTYPE", AMP_NAMES[args.amp]]
    if args.channels_last:
        options += ["TEST.CHANNELS_LAST", "True"]
    if args.cudnn_benchmark:
        options += ["CUDNN_BENCHMARK", "True"]
    return load_config(args.config_file, options + list(args.opts))


def random_inputs(batch: int, height: int, width: int, seed: int = 0) -> list[dict]:
    """`batch` dataset-mapper outputs: uint8 CHW images on the CPU, as the test loader gives."""
    generator = torch.Generator().manual_seed(seed)
    shape = (3, height, width)
    return [
        {
            "image": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
            "height": height,
            "width": width,
        }
        for _ in range(batch)
    ]


def fixed_detections(
    image_size: tuple[int, int], count: int, num_classes: int, device: torch.device
) -> Instances:
    """`count` detections at fixed places (5-35% of the image side, seeded), scores 0.99 down
    to 0.5, classes in turn."""
    height, width = image_size
    generator = torch.Generator().manual_seed(count)
    scale = torch.tensor([width, height], dtype=torch.float32)
    centers = torch.rand(count, 2, generator=generator) * scale
    half = (0.05 + 0.3 * torch.rand(count, 2, generator=generator)) * scale / 2
    boxes = Boxes(torch.cat([centers - half, centers + half], dim=1))
    boxes.clip(image_size)
    detections = Instances(image_size)
    detections.pred_boxes = boxes.to(device)
    detections.scores = torch.linspace(0.99, 0.5, count, device=device)
    detections.pred_classes = torch.arange(count, device=device) % num_classes
    return detections


class GivenDetectionsRCNN(nn.Module):
    """A GeneralizedRCNN's inference with its box head's detections replaced by `count` fixed
    boxes per image: backbone, RPN and box head run as usual (their detections are dropped),
    then the mask / MaskIoU / parsing heads and detector_postprocess run on the fixed boxes."""

    def __init__(self, model: GeneralizedRCNN, count: int):
        super().__init__()
        self.model = model
        self.count = count

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        model = self.model
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        # StandardROIHeads' inference is `_forward_box` then `forward_with_given_boxes`: the
        # first runs the box head (cascade stages included) as in a normal forward
        model.roi_heads._forward_box(features, proposals)
        detections = [
            fixed_detections(size, self.count, model.roi_heads.num_classes, images.tensor.device)
            for size in images.image_sizes
        ]
        detections = model.roi_heads.forward_with_given_boxes(features, detections)
        return [
            {"instances": detector_postprocess(result, inputs["height"], inputs["width"])}
            for result, inputs in zip(detections, batched_inputs)
        ]


def project_panoptic_deeplab_cfg(cfg: CfgNode) -> CfgNode:
    """Detectron2's Panoptic-DeepLab project config with the same architecture as d2seg's
    `cfg` (the key correspondence of tests/modeling/panoptic_deeplab/test_parity.py)."""
    from detectron2.projects.panoptic_deeplab import add_panoptic_deeplab_config

    project = get_cfg()
    add_panoptic_deeplab_config(project)
    model, sem, ins, pdl = (
        cfg.MODEL,
        cfg.MODEL.SEM_SEG_HEAD,
        cfg.MODEL.INS_EMBED_HEAD,
        cfg.MODEL.PANOPTIC_DEEPLAB,
    )
    project.DATASETS.TRAIN = cfg.DATASETS.TRAIN  # both read the thing classes from its metadata
    project.INPUT.FORMAT = cfg.INPUT.FORMAT
    project.INPUT.CROP.SIZE = cfg.INPUT.CROP.SIZE
    # the project pools ASPP over the training crop when cropping is on, else globally
    project.INPUT.CROP.ENABLED = cfg.INPUT.CROP.ENABLED and pdl.ASPP_POOLING == "train_crop"
    for key in ("DEVICE", "PIXEL_MEAN", "PIXEL_STD", "RESNETS"):
        project.MODEL[key] = model[key].clone() if isinstance(model[key], CfgNode) else model[key]
    project.MODEL.WEIGHTS = ""
    project.MODEL.META_ARCHITECTURE = "PanopticDeepLab"
    project.MODEL.BACKBONE.NAME = "build_resnet_deeplab_backbone"
    project.MODEL.BACKBONE.FREEZE_AT = model.BACKBONE.FREEZE_AT
    separable = pdl.USE_DEPTHWISE_SEPARABLE_CONV
    psem = project.MODEL.SEM_SEG_HEAD
    psem.NAME = "PanopticDeepLabSemSegHead"
    for key in ("IN_FEATURES", "CONVS_DIM", "COMMON_STRIDE", "NORM", "IGNORE_VALUE"):
        psem[key] = sem[key]
    psem.NUM_CLASSES = sem.NUM_CLASSES
    for key, value in sem.PANOPTIC_DEEPLAB.items():
        psem[key] = value
    psem.ASPP_DILATIONS = list(sem.ASPP.DILATIONS)
    psem.PROJECT_FEATURES = list(sem.IN_FEATURES[:-1])
    psem.USE_DEPTHWISE_SEPARABLE_CONV = separable
    pins = project.MODEL.INS_EMBED_HEAD
    pins.NAME = "PanopticDeepLabInsEmbedHead"
    for key, value in ins.items():
        if key != "NAME":
            pins[key] = value
    pins.PROJECT_FEATURES = list(ins.IN_FEATURES[:-1])
    for key in (
        "CENTER_THRESHOLD",
        "NMS_KERNEL",
        "PREDICT_INSTANCES",
        "SIZE_DIVISIBILITY",
        "STUFF_AREA",
        "TOP_K_INSTANCE",
        "USE_DEPTHWISE_SEPARABLE_CONV",
    ):
        project.MODEL.PANOPTIC_DEEPLAB[key] = pdl[key]
    project.freeze()
    return project


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


class PeakMemory:
    """Peak memory of the forwards run inside it, in MiB: CUDA allocated (weights included), or
    the growth of the CPU process's peak resident set above its resident set at entry."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "cpu peak RSS growth"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current resident set
            self._start_kib = _vm_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = (_vm_kib("VmHWM") - self._start_kib) / 1024


def measure(
    run: Callable[[list[dict]], list[dict]],
    inputs: list[dict],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict:
    """Times, memory and FLOPs of `run(inputs)`; each repeat is one timed forward."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    batch = len(inputs)
    with torch.no_grad():
        for _ in range(warmup):
            run(inputs)
        seconds = []
        with PeakMemory(device) as memory:
            for _ in range(repeats):
                synchronize()
                start = time.perf_counter()
                outputs = run(inputs)
                synchronize()
                seconds.append(time.perf_counter() - start)
        counter = FlopCounterMode(display=False)
        with counter:
            run(inputs)
    per_image_ms = sorted(1000 * s / batch for s in seconds)
    quartiles = (
        statistics.quantiles(per_image_ms, n=4, method="inclusive")
        if len(per_image_ms) > 1
        else per_image_ms * 3
    )
    median = statistics.median(per_image_ms)
    return {
        "ms_per_image": {
            "median": median,
            "min": per_image_ms[0],
            "q1": quartiles[0],
            "q3": quartiles[2],
            "max": per_image_ms[-1],
        },
        "images_per_s": 1000 / median,
        "peak_memory_mib": memory.mib,
        "memory_kind": memory.kind,
        "gflops_per_image": counter.get_total_flops() / batch / 1e9,
        "output_dtypes": sorted(_float_dtypes(outputs)),
    }


def _float_dtypes(value) -> set[str]:
    """Dtypes of the floating tensors in a model's outputs (to show they stay float32)."""
    if isinstance(value, torch.Tensor):
        return {str(value.dtype)} if value.is_floating_point() else set()
    if isinstance(value, Instances):
        return _float_dtypes(list(value.get_fields().values()))
    if isinstance(value, dict):
        return _float_dtypes(list(value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(_float_dtypes(v) for v in value)) if value else set()
    tensor = getattr(value, "tensor", None)
    return _float_dtypes(tensor) if isinstance(tensor, torch.Tensor) else set()


def build_runs(cfg: CfgNode, detections: int | None) -> tuple[dict[str, nn.Module], str]:
    """The models to time, by name: d2seg's, and Detectron2's project beside a
    Panoptic-DeepLab config (its weights copied into d2seg's where the layouts agree); and
    how the weights were set."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if detections is not None:
        if not isinstance(model, GeneralizedRCNN) or isinstance(model, PanopticFPN):
            raise SystemExit(
                f"--detections needs an R-CNN config (GeneralizedRCNN), not "
                f"{cfg.MODEL.META_ARCHITECTURE}"
            )
        return {"d2seg": GivenDetectionsRCNN(model, detections)}, "random"
    runs: dict[str, nn.Module] = {"d2seg": model}
    weights = "random"
    if cfg.MODEL.META_ARCHITECTURE == "D2SegPanopticDeepLab":
        if cfg.MODEL.RESNETS.DEPTH not in PROJECT_RESNET_DEPTHS:
            print(
                f"Detectron2's project not timed: its backbone has no ResNet-"
                f"{cfg.MODEL.RESNETS.DEPTH} (only {PROJECT_RESNET_DEPTHS})"
            )
            return runs, weights
        torch.manual_seed(0)
        project = build_model(project_panoptic_deeplab_cfg(cfg)).eval()
        state = project.state_dict()
        if set(state) == set(model.state_dict()):
            model.load_state_dict(state)
            weights = "random, the project's loaded into d2seg's model"
        else:
            weights = "separate random weights (the head layouts differ)"
        runs["detectron2_project"] = project
    return runs, weights


def format_row(name: str, result: dict) -> str:
    ms = result["ms_per_image"]
    memory = "-" if result["peak_memory_mib"] is None else f"{result['peak_memory_mib']:.0f}"
    return (
        f"| {name} | {ms['median']:.2f} | {ms['min']:.2f} / {ms['q1']:.2f} / {ms['q3']:.2f} / "
        f"{ms['max']:.2f} | {result['images_per_s']:.2f} | {memory} | "
        f"{result['gflops_per_image']:.2f} | {', '.join(result['output_dtypes'])} |"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = benchmark_config(args)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    device = torch.device(cfg.MODEL.DEVICE)
    height = args.height or cfg.INPUT.MIN_SIZE_TEST
    width = args.width or cfg.INPUT.MAX_SIZE_TEST
    inputs = random_inputs(args.batch, height, width)
    runs, weights = build_runs(cfg, args.detections)
    report = {
        "config": args.config_file,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "amp": cfg.TEST.AMP.DTYPE if cfg.TEST.AMP.ENABLED else None,
        "channels_last": cfg.TEST.CHANNELS_LAST,
        "cudnn_benchmark": cfg.CUDNN_BENCHMARK,
        "batch": args.batch,
        "detections": args.detections,
        "height": height,
        "width": width,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "weights": weights,
        "models": {},
    }
    for name, model in runs.items():
        with optimized_inference(cfg, model) as run:
            report["models"][name] = measure(run, inputs, device, args.warmup, args.repeats)
    if "detectron2_project" in report["models"]:
        ours, theirs = (report["models"][k]["ms_per_image"]["median"] for k in runs)
        report["ratio_d2seg_over_project"] = ours / theirs

    print(
        f"{Path(args.config_file).name} on {report['device_name']}: batch {args.batch}, "
        f"{height} x {width}, amp {report['amp']}, channels-last {report['channels_last']}, "
        f"cudnn benchmark {report['cudnn_benchmark']}, detections {args.detections}, "
        f"{args.repeats} repeats after {args.warmup} warm-up, weights {weights}"
    )
    print(
        "| model | ms / image (median) | min / q1 / q3 / max | images / s | "
        f"peak MiB ({next(iter(report['models'].values()))['memory_kind']}) | GFLOPs / image | "
        "output dtypes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, result in report["models"].items():
        print(format_row(name, result))
    if "ratio_d2seg_over_project" in report:
        print(f"d2seg / Detectron2 project (median ms): {report['ratio_d2seg_over_project']:.3f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
