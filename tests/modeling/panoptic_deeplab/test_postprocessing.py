"""Panoptic-DeepLab post-processing against a straightforward per-pixel reference loop."""

import numpy as np
import pytest
import torch

from d2seg.modeling.panoptic_deeplab.postprocessing import (
    VOID,
    find_instance_centers,
    panoptic_deeplab_inference,
)

THING_IDS = [0, 1, 2]
NUM_CLASSES = 6


def reference(sem_seg, heatmap, offsets, threshold, nms_kernel, top_k, stuff_area, label_divisor):
    """The algorithm of the paper (sec. 3.3) written out pixel by pixel with numpy."""
    sem_seg, heatmap, offsets = sem_seg.numpy(), heatmap[0].numpy(), offsets.numpy()
    height, width = sem_seg.shape
    half = nms_kernel // 2
    peaks = []
    for y in range(height):
        for x in range(width):
            value = heatmap[y, x]
            window = heatmap[max(y - half, 0) : y + half + 1, max(x - half, 0) : x + half + 1]
            if value > threshold and value >= window[window > threshold].max():
                peaks.append((value, y, x))
    if top_k is not None and len(peaks) > top_k:
        keep = sorted(peaks, key=lambda p: -p[0])[:top_k]
        peaks = [p for p in peaks if p in keep]
    centers = [(y, x) for _, y, x in peaks]
    panoptic = np.full((height, width), VOID)
    instance = np.zeros((height, width), int)
    for y in range(height):
        for x in range(width):
            if sem_seg[y, x] in THING_IDS and centers:
                py, px = y + offsets[0, y, x], x + offsets[1, y, x]
                distances = [(py - cy) ** 2 + (px - cx) ** 2 for cy, cx in centers]
                instance[y, x] = int(np.argmin(distances)) + 1
    counters = {}
    for k in range(1, len(centers) + 1):
        mask = instance == k
        if not mask.any():
            continue
        category = int(np.argmax(np.bincount(sem_seg[mask], minlength=NUM_CLASSES)))
        counters[category] = counters.get(category, 0) + 1
        panoptic[mask] = category * label_divisor + counters[category]
    for category in range(NUM_CLASSES):
        if category in THING_IDS:
            continue
        mask = sem_seg == category
        if mask.sum() >= stuff_area:
            panoptic[mask] = category * label_divisor
    return panoptic, centers


def random_outputs(seed, height=23, width=31, num_centers=6):
    generator = torch.Generator().manual_seed(seed)
    sem_seg = torch.randint(0, NUM_CLASSES, (height // 4 + 1, width // 4 + 1), generator=generator)
    sem_seg = sem_seg.repeat_interleave(4, 0).repeat_interleave(4, 1)[:height, :width]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    heatmap = torch.zeros(height, width)
    for _ in range(num_centers):
        cy, cx = torch.rand(2, generator=generator) * torch.tensor([height, width])
        heatmap = torch.maximum(heatmap, torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 8))
    heatmap = heatmap * (0.5 + torch.rand(height, width, generator=generator) * 0.01)
    offsets = torch.randn(2, height, width, generator=generator) * 5
    return sem_seg, heatmap[None], offsets


CASES = [
    dict(threshold=0.1, nms_kernel=3, top_k=None, stuff_area=20, label_divisor=1000),
    dict(threshold=0.2, nms_kernel=5, top_k=3, stuff_area=60, label_divisor=256),
    dict(threshold=0.05, nms_kernel=7, top_k=200, stuff_area=0, label_divisor=1000),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_loop(seed, case):
    sem_seg, heatmap, offsets = random_outputs(seed)
    expected, expected_centers = reference(sem_seg, heatmap, offsets, **case)
    for chunk_size in (7, 1 << 20):  # chunked and unchunked grouping
        panoptic, centers = panoptic_deeplab_inference(
            sem_seg,
            heatmap,
            offsets,
            thing_ids=torch.tensor(THING_IDS),
            chunk_size=chunk_size,
            **case,
        )
        assert centers.tolist() == [list(c) for c in expected_centers]
        np.testing.assert_array_equal(panoptic.numpy(), expected)


def test_segment_ids_decode_to_valid_segments():
    sem_seg, heatmap, offsets = random_outputs(11)
    panoptic, _ = panoptic_deeplab_inference(
        sem_seg,
        heatmap,
        offsets,
        thing_ids=torch.tensor(THING_IDS),
        label_divisor=1000,
        stuff_area=30,
        threshold=0.1,
        nms_kernel=3,
        top_k=None,
    )
    labels = panoptic[panoptic != VOID]
    classes, indices = labels // 1000, labels % 1000
    is_thing = torch.isin(classes, torch.tensor(THING_IDS))
    assert (indices[is_thing] >= 1).all() and (indices[~is_thing] == 0).all()
    # a stuff pixel is labelled with its own semantic class, a VOID pixel only when its stuff
    # class covers fewer than stuff_area pixels
    stuff = ~torch.isin(sem_seg, torch.tensor(THING_IDS))
    labelled_stuff = stuff & (panoptic != VOID)
    assert (panoptic[labelled_stuff] == sem_seg[labelled_stuff] * 1000).all()
    for category in range(3, NUM_CLASSES):
        area = (sem_seg == category).sum()
        assert ((panoptic[sem_seg == category] == VOID).all()) == (area < 30)


def test_stuff_area_rule_and_no_centers():
    sem_seg = torch.tensor([[3, 3, 4], [3, 0, 0]])
    heatmap = torch.zeros(1, 2, 3)
    panoptic, centers = panoptic_deeplab_inference(
        sem_seg,
        heatmap,
        torch.zeros(2, 2, 3),
        thing_ids=torch.tensor(THING_IDS),
        label_divisor=1000,
        stuff_area=3,
        threshold=0.1,
        nms_kernel=3,
        top_k=200,
    )
    assert len(centers) == 0  # thing pixels without any centre are VOID
    # class 3 covers exactly stuff_area pixels and stays (>=); class 4's single pixel goes
    assert panoptic.tolist() == [[3000, 3000, VOID], [3000, VOID, VOID]]


def test_top_k_keeps_the_highest_peaks_in_raster_order():
    heatmap = torch.zeros(1, 9, 9)
    for (y, x), value in {(0, 0): 0.3, (0, 8): 0.9, (8, 0): 0.5, (8, 8): 0.7}.items():
        heatmap[0, y, x] = value
    centers = find_instance_centers(heatmap, threshold=0.1, nms_kernel=3, top_k=2)
    assert centers.tolist() == [[0, 8], [8, 8]]


def test_centre_threshold_is_strict():
    heatmap = torch.zeros(1, 9, 9)
    heatmap[0, 1, 1], heatmap[0, 7, 7] = 0.5, 0.5 + 2**-10
    centers = find_instance_centers(heatmap, threshold=0.5, nms_kernel=3, top_k=None)
    assert centers.tolist() == [[7, 7]]
