"""The scene renderer shared by every synthetic image: a textured "stuff" background (sky above
a wavy horizon, grass and/or sand below), things painted over it back to front with their own
textures, and the occlusion rule that drops things mostly hidden by those in front.

The instance/panoptic shapes and the human-parsing figures are drawn through the same
:class:`Scene`, so both datasets share one background, one texture model and one occlusion rule.
Every draw comes from the caller's generator, in a fixed order, so a seed fixes the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

STUFF_CATEGORIES = [
    {"id": 4, "name": "sky", "isthing": 0, "color": [170, 190, 205]},
    {"id": 5, "name": "grass", "isthing": 0, "color": [110, 135, 80]},
    {"id": 6, "name": "sand", "isthing": 0, "color": [195, 175, 130]},
]
"""The background's regions, in the order of :attr:`Scene.stuff_layout`'s indices."""

IMAGE_SIDE_RANGE = (224, 320)  # [low, high) of the image height and width, in pixels
MIN_VISIBLE_FRACTION = 0.35  # things hidden more than this by those in front are not drawn


def stuff_layout(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Index into STUFF_CATEGORIES per pixel: sky above a wavy horizon, grass/sand below."""
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    horizon = rng.uniform(0.25, 0.6) * height + rng.uniform(4, 16) * np.sin(
        2 * np.pi * xs / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi)
    )
    layout = np.where(ys < horizon, 0, 1).astype(np.uint8)
    ground_mode = rng.integers(3)  # 0: grass only, 1: sand only, 2: both, split by a wavy line
    if ground_mode == 1:
        layout[layout == 1] = 2
    elif ground_mode == 2:
        border = rng.uniform(0.25, 0.75) * width + rng.uniform(4, 20) * np.sin(
            2 * np.pi * ys / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi)
        )
        layout[(layout == 1) & (xs >= border)] = 2
    return layout


def texture(rng: np.random.Generator, height: int, width: int, color) -> np.ndarray:
    """A float (H, W, 3) texture: colour jitter, oriented stripes and per-pixel noise."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / rng.uniform(6, 24))
    base = np.asarray(color, np.float32) + rng.uniform(-15, 15, size=3)
    striped = base + rng.uniform(6, 18) * stripes[..., None]
    return striped + rng.normal(0, 6, size=(height, width, 3))


def keep_visible(
    masks: Sequence[np.ndarray], min_visible_pixels: int
) -> list[tuple[int, np.ndarray]]:
    """(index, visible bool mask) of the things worth drawing, back to front.

    `masks` are the things' full masks, back to front. Walking from the front, a thing is kept
    when at least `min_visible_pixels` and MIN_VISIBLE_FRACTION of it are not covered by the
    kept things in front of it; dropping one never changes what is visible of those in front.
    """
    kept = []
    covered = np.zeros(masks[0].shape, bool) if masks else None
    for index in reversed(range(len(masks))):
        inside = masks[index].astype(bool)
        visible = inside & ~covered
        area = int(visible.sum())
        if area >= max(min_visible_pixels, MIN_VISIBLE_FRACTION * inside.sum()):
            kept.append((index, visible))
            covered |= inside
    return kept[::-1]


@dataclass
class Scene:
    """A float RGB canvas being painted, over the stuff regions it was started with."""

    canvas: np.ndarray
    """(H, W, 3) float32, RGB; values outside [0, 255] are clipped by :meth:`image`."""
    stuff_layout: np.ndarray
    """(H, W) uint8 index into STUFF_CATEGORIES."""

    @classmethod
    def with_background(cls, rng: np.random.Generator) -> Scene:
        """Draw an image size from IMAGE_SIDE_RANGE and texture each stuff region."""
        height, width = (int(v) for v in rng.integers(*IMAGE_SIDE_RANGE, size=2))
        layout = stuff_layout(rng, height, width)
        canvas = np.zeros((height, width, 3), np.float32)
        for index, category in enumerate(STUFF_CATEGORIES):
            region = layout == index
            canvas[region] = texture(rng, height, width, category["color"])[region]
        return cls(canvas, layout)

    @property
    def height(self) -> int:
        return self.canvas.shape[0]

    @property
    def width(self) -> int:
        return self.canvas.shape[1]

    def paint(self, rng: np.random.Generator, mask: np.ndarray, color) -> None:
        """Paint `mask` (H, W) with a texture of `color`, drawn over the mask's bounding box;
        an empty mask draws nothing."""
        x0, y0, w, h = cv2.boundingRect(mask.astype(np.uint8))
        if w and h:
            region = mask[y0 : y0 + h, x0 : x0 + w].astype(bool)
            self.canvas[y0 : y0 + h, x0 : x0 + w][region] = texture(rng, h, w, color)[region]

    def image(self) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image painted so far."""
        return np.clip(self.canvas, 0, 255).astype(np.uint8)
