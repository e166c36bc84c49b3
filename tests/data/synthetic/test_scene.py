"""The shared scene renderer: background, painting and the occlusion rule."""

import numpy as np

from d2seg.data.synthetic.scene import (
    IMAGE_SIDE_RANGE,
    MIN_VISIBLE_FRACTION,
    STUFF_CATEGORIES,
    Scene,
    keep_visible,
)


def _box(top, left, bottom, right, shape=(20, 20)):
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def test_keep_visible_drops_things_mostly_hidden_by_those_in_front():
    back = _box(0, 0, 10, 10)  # 100 px, 80 of them hidden by `front`
    middle = _box(10, 10, 20, 20)  # untouched
    front = _box(2, 0, 10, 10)
    kept = keep_visible([back, middle, front], min_visible_pixels=5)
    assert [index for index, _ in kept] == [1, 2]
    assert np.array_equal(kept[0][1], middle) and np.array_equal(kept[1][1], front)
    assert MIN_VISIBLE_FRACTION > 20 / 100


def test_keep_visible_reports_visible_parts_and_a_minimum_size():
    back, front = _box(0, 0, 10, 10), _box(0, 0, 4, 10)
    kept = keep_visible([back, front], min_visible_pixels=5)
    assert np.array_equal(kept[0][1], back & ~front)
    # the 40-px front thing is too small to draw, so it hides nothing of the one behind it
    kept = keep_visible([back, front], min_visible_pixels=61)
    assert [index for index, _ in kept] == [0] and np.array_equal(kept[0][1], back)
    assert keep_visible([], min_visible_pixels=1) == []


def test_background_covers_the_image_with_stuff_and_is_seeded():
    first = Scene.with_background(np.random.default_rng(3))
    second = Scene.with_background(np.random.default_rng(3))
    assert np.array_equal(first.image(), second.image())
    assert IMAGE_SIDE_RANGE[0] <= min(first.height, first.width)
    assert max(first.height, first.width) < IMAGE_SIDE_RANGE[1]
    assert first.stuff_layout.shape == (first.height, first.width)
    assert set(np.unique(first.stuff_layout)) <= set(range(len(STUFF_CATEGORIES)))
    assert (first.stuff_layout[0] == 0).all()  # sky on top


def test_paint_changes_only_the_mask_and_an_empty_mask_draws_nothing():
    scene = Scene.with_background(np.random.default_rng(0))
    before = scene.image()
    rng = np.random.default_rng(1)
    scene.paint(rng, np.zeros((scene.height, scene.width), bool), (255, 0, 0))
    assert np.array_equal(scene.image(), before)
    assert rng.random() == np.random.default_rng(1).random()  # no draw consumed
    mask = _box(5, 5, 30, 40, (scene.height, scene.width))
    scene.paint(rng, mask, (255, 0, 0))
    changed = (scene.image() != before).any(axis=2)
    assert not changed[~mask].any() and changed[mask].mean() > 0.9
