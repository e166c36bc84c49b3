#!/usr/bin/env python
"""Parsing R-CNN inference cost, measured side by side in one run.

    python benchmarks/parsing.py [--images 5] [--rounds 2]

1. Parsing R-CNN vs Mask R-CNN, both R-50-FPN at the test size of the paper configs (800 /
   1333), one person class, exactly 10 detections per image (score threshold 0, 10 kept), on the
   same preloaded images of `d2seg_synthetic_parsing_val` (resized to 800 like CIHP). Weights are
   random (the cost does not depend on them) with BatchNorm in the backbone, its statistics
   measured on those images so that the random network yields sane proposals. The two
   alternate image by image over several rounds and each image counts with its fastest time.
   Parsing R-CNN is timed without and with pasting its 10 part maps
   (`pred_parsing.label_crops`), which Mask R-CNN does inside its forward.
2. The GCE head alone per RoI (10 RoIs of 256 x 32 x 32, best of 3) and its multiply-adds
   (fvcore's FlopCountAnalysis), against Mask R-CNN's mask head.
3. Paste-back of 100 detections on a 1333 x 800 image: time and peak memory (peak RSS above the
   RSS with the inputs built, in a fresh child process; Linux) of d2seg's per-box label crops,
   against pasting every detection into its own full-image map as the reference's
   `parsing_results` does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis

from d2seg.config import load_config
from d2seg.data import build_test_mapper
from d2seg.modeling.postprocessing.parsing import crops_to_label_maps, paste_parsing

DATASET = "d2seg_synthetic_parsing_val"
TEN_DETECTIONS = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", "1",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10",
    "INPUT.MIN_SIZE_TEST", "800", "INPUT.MAX_SIZE_TEST", "1333", "DATASETS.TEST", f"('{DATASET}',)",
    "MODEL.RESNETS.NORM", "BN",
]  # fmt: skip
CONFIGS = {
    "Mask R-CNN": "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "Parsing R-CNN": "configs/CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml",
}
HEIGHT, WIDTH, DETECTIONS, PARTS, SIDE = 800, 1333, 100, 20, 128


def _models():
    models = {}
    for name, config in CONFIGS.items():
        cfg = load_config(config, TEN_DETECTIONS)
        torch.manual_seed(0)
        models[name] = build_model(cfg).eval()
    loader_cfg = load_config(CONFIGS["Parsing R-CNN"], TEN_DETECTIONS)
    return models, loader_cfg


def _calibrate(model, batches: list) -> None:
    """Set the random backbone's BatchNorm statistics to those of `batches` (without them a
    random R-50 blows its activations up and the RPN finds almost no valid box)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        for batch in batches:
            model.backbone(model.preprocess_image(batch).tensor)
    model.eval()


def _timed(model, batch, paste: bool) -> float:
    start = time.perf_counter()
    instances = model(batch)[0]["instances"]
    assert len(instances) == 10, len(instances)
    if paste:
        instances.pred_parsing.label_crops(instances.pred_boxes.tensor, instances.image_size)
    return time.perf_counter() - start


def end_to_end(images: int, rounds: int) -> dict[str, float]:
    """Mean over images of each image's fastest time, per model (and Parsing R-CNN + paste)."""
    models, cfg = _models()
    loader = build_detection_test_loader(cfg, DATASET, mapper=build_test_mapper(cfg))
    batches = [batch for _, batch in zip(range(images), loader)]
    for model in models.values():
        _calibrate(model, batches)
    runs = {
        "Mask R-CNN": (models["Mask R-CNN"], False),
        "Parsing R-CNN": (models["Parsing R-CNN"], False),
        "Parsing R-CNN + paste": (models["Parsing R-CNN"], True),
    }
    best = {name: [float("inf")] * images for name in runs}
    with torch.no_grad():
        for model, paste in runs.values():
            _timed(model, batches[0], paste)  # warm-up
        for _ in range(rounds):
            for index, batch in enumerate(batches):
                for name, (model, paste) in runs.items():
                    best[name][index] = min(best[name][index], _timed(model, batch, paste))
    shape = tuple(batches[0][0]["image"].shape[-2:])
    print(
        f"end to end, {images} images of about {shape[0]} x {shape[1]}, 10 detections each, "
        f"{torch.get_num_threads()} threads, best of {rounds} rounds per image:"
    )
    means = {name: sum(times) / images for name, times in best.items()}
    for name, seconds in means.items():
        print(f"  {name:24s} {seconds:7.3f} s / image")
    for name in ("Parsing R-CNN", "Parsing R-CNN + paste"):
        print(f"  {name} / Mask R-CNN: x{means[name] / means['Mask R-CNN']:.2f} (target <= 2.0)")
    return means


class _Layers(torch.nn.Module):
    """A Detectron2 mask head's layers alone (its forward also needs instances)."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.layers(x)


def head_cost(repeats: int = 3) -> None:
    """Per-RoI time and multiply-adds of the GCE head and of Mask R-CNN's mask head."""
    models, _ = _models()
    heads = {
        "GCE head (32 x 32 RoIs)": (models["Parsing R-CNN"].roi_heads.parsing_head, 32),
        "Mask R-CNN mask head (14 x 14)": (models["Mask R-CNN"].roi_heads.mask_head, 14),
    }
    print("heads alone, 10 RoIs of 256 channels:")
    for name, (head, side) in heads.items():
        pooled = torch.randn(10, 256, side, side)
        forward = _Layers(head) if hasattr(head, "layers") else head
        with torch.no_grad():
            forward(pooled)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                forward(pooled)
                best = min(best, time.perf_counter() - start)
            flops = FlopCountAnalysis(forward, pooled)
            flops.unsupported_ops_warnings(False)
            flops.uncalled_modules_warnings(False)
            macs = flops.total() / 10
        print(f"  {name:32s} {best / 10 * 1000:7.1f} ms / RoI   {macs / 1e9:6.2f} GMAC / RoI")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset the process's peak RSS to its current RSS (Linux: /proc/self/clear_refs "5"), so
    that an earlier peak (imports, building the inputs) cannot hide the one measured; returns
    the current RSS in kB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_kb("VmRSS")


def _paste(kind: str, queue) -> None:
    """Child process: 100 detections' probabilities and boxes, then one paste; the time and the
    peak RSS above the inputs."""
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(DETECTIONS, PARTS, SIDE, SIDE, generator=generator)
    probabilities /= probabilities.sum(dim=1, keepdim=True)  # in place: RSS = the inputs
    heights = torch.rand(DETECTIONS, generator=generator) * 600 + 100
    widths = heights * (0.3 + 0.3 * torch.rand(DETECTIONS, generator=generator))
    x0 = torch.rand(DETECTIONS, generator=generator) * (WIDTH - widths / 2)
    y0 = torch.rand(DETECTIONS, generator=generator) * (HEIGHT - heights / 2)
    boxes = torch.stack([x0, y0, x0 + widths, y0 + heights], dim=1)
    baseline = _reset_peak_rss()
    start = time.perf_counter()
    crops = paste_parsing(probabilities, boxes, (HEIGHT, WIDTH))
    if kind == "full maps":
        result_bytes = crops_to_label_maps(crops, (HEIGHT, WIDTH)).numel()
    else:
        result_bytes = sum(crop.labels.numel() for crop in crops)
    seconds = time.perf_counter() - start
    peak_mb = (_status_kb("VmHWM") - baseline) / 1024
    queue.put((seconds, peak_mb, result_bytes / 2**20, probabilities.numel() * 4 / 2**20))


def paste_memory() -> None:
    context = multiprocessing.get_context("spawn")
    print(
        f"paste-back of {DETECTIONS} detections ({PARTS} parts, {SIDE} x {SIDE}) on a "
        f"{WIDTH} x {HEIGHT} image, fresh process each:"
    )
    for kind in ("label crops", "full maps"):
        queue = context.Queue()
        process = context.Process(target=_paste, args=(kind, queue))
        process.start()
        seconds, peak_mb, result_mb, probabilities_mb = queue.get()
        process.join()
        print(
            f"  {kind:12s} {seconds:6.2f} s   peak +{peak_mb:6.0f} MB   result "
            f"{result_mb:6.1f} MB   (lazy probabilities held until pasted: "
            f"{probabilities_mb:.0f} MB)"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    head_cost()
    paste_memory()
    end_to_end(args.images, args.rounds)


if __name__ == "__main__":
    main()
