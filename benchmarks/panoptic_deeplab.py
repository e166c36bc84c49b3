#!/usr/bin/env python
"""Panoptic-DeepLab post-processing and inference speed, measured side by side in one run.

    python benchmarks/panoptic_deeplab.py

1. Post-processing of one 1024 x 2048 output with 200 centres: d2seg's chunked grouping vs a
   straightforward implementation of the same algorithm that, like the reference, measures
   every pixel's distance to every centre at once (a K x H x W x 2 tensor). Each runs in a fresh
   child process, which reports its best time of a few repeats and its peak memory (RSS) above
   what the inputs took. Both must give the same panoptic map.
2. End-to-end CPU inference time per image of the quickstart model
   (configs/quickstart/panoptic_deeplab_R_18_synthetic.yaml, its trained weights when
   output/quickstart/panoptic_deeplab_R_18_synthetic/model_final.pth exists).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time

import torch

from d2seg.modeling.panoptic_deeplab.postprocessing import (
    VOID,
    find_instance_centers,
    panoptic_deeplab_inference,
)

HEIGHT, WIDTH, NUM_CENTERS = 1024, 2048, 200
THING_IDS = torch.arange(11, 19)  # Cityscapes train ids of the thing classes
SETTINGS = {
    "label_divisor": 1000,
    "stuff_area": 2048,
    "threshold": 0.1,
    "nms_kernel": 7,
    "top_k": 200,
}


def make_outputs(seed: int = 0):
    """Semantic map (things on ~40% of the pixels), 200 separated centre peaks, offsets."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 19, (HEIGHT // 64, WIDTH // 64), generator=generator)
    sem_seg = blocks.repeat_interleave(64, 0).repeat_interleave(64, 1)
    heatmap = torch.zeros(1, HEIGHT, WIDTH)
    grid_y, grid_x = torch.meshgrid(torch.arange(10), torch.arange(20), indexing="ij")
    peaks_y = (grid_y.flatten() * 100 + 50).clamp(max=HEIGHT - 1)
    peaks_x = (grid_x.flatten() * 100 + 50).clamp(max=WIDTH - 1)
    heatmap[0, peaks_y, peaks_x] = 0.5 + torch.rand(NUM_CENTERS, generator=generator) / 2
    offsets = torch.randn(2, HEIGHT, WIDTH, generator=generator) * 40
    return sem_seg, heatmap, offsets


def straightforward(
    sem_seg, heatmap, offsets, *, label_divisor, stuff_area, threshold, nms_kernel, top_k
):
    """The same algorithm, written the direct way (distances of all pixels to all centres)."""
    centers = find_instance_centers(heatmap, threshold, nms_kernel, top_k).float()
    is_thing = torch.isin(sem_seg, THING_IDS)
    panoptic = torch.full(sem_seg.shape, VOID, dtype=torch.int64)
    if len(centers):
        ys, xs = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
        pointed = torch.stack([ys, xs]).float() + offsets  # (2, H, W)
        difference = centers[:, :, None, None] - pointed[None]  # (K, 2, H, W)
        instance = (difference**2).sum(dim=1).argmin(dim=0)  # (H, W)
        counters: dict[int, int] = {}
        for k in range(len(centers)):
            mask = (instance == k) & is_thing
            if not mask.any():
                continue
            category = int(torch.bincount(sem_seg[mask]).argmax())
            counters[category] = counters.get(category, 0) + 1
            panoptic[mask] = category * label_divisor + counters[category]
    for category in torch.unique(sem_seg[~is_thing]).tolist():
        mask = sem_seg == category
        if mask.sum() >= stuff_area:
            panoptic[mask] = category * label_divisor
    return panoptic


def _measure(name: str, repeats: int, queue) -> None:
    """Child process: inputs, then `repeats` runs; best time and peak RSS above the inputs."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    inputs = make_outputs()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        if name == "d2seg":
            panoptic, _ = panoptic_deeplab_inference(*inputs, thing_ids=THING_IDS, **SETTINGS)
        else:
            panoptic = straightforward(*inputs, **SETTINGS)
        best = min(best, time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    queue.put((best, peak_mb, panoptic.numpy()))  # numpy: no shared memory to outlive us


def measure(name: str, repeats: int):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(name, repeats, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def quickstart_inference_seconds(images: int) -> tuple[float, str]:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    from d2seg.config import load_config
    from d2seg.data import build_test_mapper

    cfg = load_config("configs/quickstart/panoptic_deeplab_R_18_synthetic.yaml")
    model = build_model(cfg).eval()
    weights = "output/quickstart/panoptic_deeplab_R_18_synthetic/model_final.pth"
    source = "untrained"
    if os.path.isfile(weights):
        DetectionCheckpointer(model).load(weights)
        source = "trained"
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0], mapper=build_test_mapper(cfg))
    inputs = [batch for _, batch in zip(range(images), loader)]
    with torch.no_grad():
        model(inputs[0])  # warm-up
        start = time.perf_counter()
        for batch in inputs:
            model(batch)
    return (time.perf_counter() - start) / len(inputs), source


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args(argv)
    ours_time, ours_mb, ours = measure("d2seg", args.repeats)
    plain_time, plain_mb, plain = measure("straightforward", args.repeats)
    assert (ours == plain).all(), "the two implementations disagree"
    print(
        f"post-processing {HEIGHT}x{WIDTH}, {NUM_CENTERS} centres, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}:"
    )
    print(f"  d2seg (chunked)   {ours_time:8.3f} s   peak +{ours_mb:8.0f} MB")
    print(f"  straightforward   {plain_time:8.3f} s   peak +{plain_mb:8.0f} MB")
    print(
        f"  speed-up x{plain_time / ours_time:.1f}, memory / {plain_mb / max(ours_mb, 1):.1f} "
        "(targets: >= 5x faster, <= 500 MB)"
    )
    seconds, source = quickstart_inference_seconds(args.images)
    print(
        f"quickstart Panoptic-DeepLab R-18 ({source} weights), CPU inference incl. "
        f"post-processing: {seconds:.3f} s / image over {args.images} images"
    )


if __name__ == "__main__":
    main()
