"""Panoptic-DeepLab targets (Detectron2's project generator, as d2seg's mapper builds it)
against a per-pixel, per-instance brute force of the paper's definitions (sec. 3.2)."""

import math

import numpy as np
import pytest
from detectron2.projects.panoptic_deeplab.target_generator import PanopticDeepLabTargetGenerator

THINGS = frozenset({0, 1})  # contiguous ids; 2 and 3 are stuff


def random_panoptic(rng, height, width):
    """Stuff bands, then thing blobs (some crowd, some small) painted over them; id 0 = VOID."""
    panoptic = np.zeros((height, width), np.int64)
    segments = []
    band = height // 3
    for index, category in enumerate((2, 3)):
        segment_id = len(segments) + 1
        panoptic[index * band : (index + 1) * band] = segment_id
        segments.append({"id": segment_id, "category_id": category, "iscrowd": 0})
    ys, xs = np.mgrid[0:height, 0:width]
    for _ in range(rng.integers(3, 7)):
        segment_id = len(segments) + 1
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(2, height / 3), rng.uniform(2, width / 3)
        blob = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        panoptic[blob] = segment_id
        segments.append(
            {
                "id": segment_id,
                "category_id": int(rng.integers(0, 2)),
                "iscrowd": int(rng.random() < 0.25),
            }
        )
    return panoptic, segments


def brute_force(panoptic, segments, sigma, small_area, small_weight, ignore=255):
    height, width = panoptic.shape
    info = {s["id"]: s for s in segments}
    radius = round(3 * sigma + 1)
    centers = {}
    for segment in segments:
        ys, xs = np.nonzero(panoptic == segment["id"])
        if segment["category_id"] in THINGS and len(ys):
            centers[segment["id"]] = (ys.mean(), xs.mean(), len(ys))
    semantic = np.full((height, width), ignore)
    weights = np.ones((height, width))
    heatmap = np.zeros((height, width))
    offset = np.zeros((2, height, width))
    center_weights = np.zeros((height, width))
    offset_weights = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            for cy, cx, _ in centers.values():
                ry, rx = round(cy), round(cx)
                if abs(y - ry) <= radius and abs(x - rx) <= radius:
                    value = math.exp(-((y - ry) ** 2 + (x - rx) ** 2) / (2 * sigma**2))
                    heatmap[y, x] = max(heatmap[y, x], value)
            segment = info.get(int(panoptic[y, x]))
            if segment is None:
                continue
            semantic[y, x] = segment["category_id"]
            is_thing = segment["category_id"] in THINGS
            if not segment["iscrowd"]:
                center_weights[y, x] = 1
                offset_weights[y, x] = float(is_thing)
            if is_thing:
                cy, cx, area = centers[segment["id"]]
                weights[y, x] = small_weight if area < small_area else 1
                offset[:, y, x] = (cy - y, cx - x)
    return semantic, weights, heatmap, offset, center_weights, offset_weights


@pytest.mark.parametrize(
    "seed,sigma,shape", [(0, 2.0, (30, 40)), (1, 3.0, (45, 37)), (2, 8.0, (70, 90))]
)
def test_targets_match_brute_force(seed, sigma, shape):
    rng = np.random.default_rng(seed)
    panoptic, segments = random_panoptic(rng, *shape)
    small_area = int(panoptic.size / 20)
    generator = PanopticDeepLabTargetGenerator(
        255,
        THINGS,
        sigma=sigma,
        small_instance_area=small_area,
        small_instance_weight=3,
        ignore_stuff_in_offset=True,
    )
    targets = generator(panoptic, segments)
    semantic, weights, heatmap, offset, center_weights, offset_weights = brute_force(
        panoptic, segments, sigma, small_area, 3.0
    )
    assert np.array_equal(targets["sem_seg"], semantic)
    np.testing.assert_allclose(targets["sem_seg_weights"], weights)
    np.testing.assert_allclose(targets["center"], heatmap, atol=1e-6)
    np.testing.assert_allclose(targets["offset"], offset, atol=1e-4)
    np.testing.assert_array_equal(targets["center_weights"][0], center_weights)
    np.testing.assert_array_equal(targets["offset_weights"][0], offset_weights)
    assert len(targets["center_points"]) == sum(
        1 for s in segments if s["category_id"] in THINGS and (panoptic == s["id"]).any()
    )


def test_cases_the_random_maps_must_cover():
    """The random maps above exercise crowd, small and large instances and VOID pixels."""
    crowd = small = large = void = 0
    for seed, shape in ((0, (30, 40)), (1, (45, 37)), (2, (70, 90))):
        panoptic, segments = random_panoptic(np.random.default_rng(seed), *shape)
        for s in segments:
            area = (panoptic == s["id"]).sum()
            if s["category_id"] in THINGS and area:
                crowd += s["iscrowd"]
                small += area < panoptic.size / 20
                large += area >= panoptic.size / 20
        void += (panoptic == 0).sum()
    assert crowd and small and large and void


def test_crowd_can_be_ignored_in_semantic():
    panoptic = np.array([[1, 1], [2, 2]])
    segments = [
        {"id": 1, "category_id": 0, "iscrowd": 1},
        {"id": 2, "category_id": 2, "iscrowd": 0},
    ]
    kept = PanopticDeepLabTargetGenerator(255, THINGS)(panoptic, segments)["sem_seg"]
    ignored = PanopticDeepLabTargetGenerator(255, THINGS, ignore_crowd_in_semantic=True)(
        panoptic, segments
    )["sem_seg"]
    assert kept.tolist() == [[0, 0], [2, 2]] and ignored.tolist() == [[255, 255], [2, 2]]


def test_mapper_builds_the_generator_from_input_keys(synthetic_root):
    from d2seg.config import load_config
    from d2seg.data.mappers.panoptic_deeplab import build_target_generator
    from tests.helpers.configs import CONFIG_ROOT

    cfg = load_config(
        str(CONFIG_ROOT / "quickstart" / "panoptic_deeplab_R_18_synthetic.yaml"),
        [
            "INPUT.GAUSSIAN_SIGMA",
            "5.0",
            "INPUT.SMALL_INSTANCE_AREA",
            "77",
            "INPUT.SMALL_INSTANCE_WEIGHT",
            "2",
            "INPUT.IGNORE_STUFF_IN_OFFSET",
            "False",
            "INPUT.IGNORE_CROWD_IN_SEMANTIC",
            "True",
        ],
    )
    generator = build_target_generator(cfg, "d2seg_synthetic_panoptic_train")
    assert (
        generator.sigma,
        generator.small_instance_area,
        generator.small_instance_weight,
        generator.ignore_stuff_in_offset,
        generator.ignore_crowd_in_semantic,
        generator.ignore_label,
    ) == (5.0, 77, 2, False, True, 255)
    assert generator.thing_ids == {0, 1, 2}


def test_small_instance_rule_is_strictly_below_the_area():
    """Thing segments of fewer than SMALL_INSTANCE_AREA pixels get the weight; equal does not."""
    panoptic = np.array([[1, 1, 2, 2], [1, 1, 2, 0], [3, 3, 3, 3]])
    segments = [
        {"id": 1, "category_id": 0, "iscrowd": 0},  # 4 pixels
        {"id": 2, "category_id": 1, "iscrowd": 0},  # 3 pixels
        {"id": 3, "category_id": 2, "iscrowd": 0},
    ]  # stuff
    weights = PanopticDeepLabTargetGenerator(
        255, THINGS, small_instance_area=4, small_instance_weight=3
    )(panoptic, segments)
    assert weights["sem_seg_weights"].tolist() == [[1, 1, 3, 3], [1, 1, 3, 1], [1, 1, 1, 1]]
