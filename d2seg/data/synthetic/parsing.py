"""Synthetic human parsing, written in CIHP's original release layout.

Every image shows two to four overlapping front-facing figures over the shared stuff background
(:mod:`d2seg.data.synthetic.scene`). A figure has hair, a face, sometimes a hat, upper clothes,
pants, arms, lower legs and shoes, each drawn with its CIHP part id. Left and right are the
figure's own: it faces the viewer, so its left arm, leg and shoe lie on the image's right, and a
horizontally flipped image shows them as the right ones (the mapper must swap the ids, as on
CIHP).

The generator writes ``instance-level_human_parsing/{Training,Validation}/{Images,Category_ids,
Human_ids,Instance_ids}/`` and ``{train,val}_id.txt`` exactly as CIHP ships them, then runs the
CIHP converter (:mod:`d2seg.data.converters.human_parsing`) on that tree, so the same converter,
loader and evaluator run on it as on CIHP. :mod:`d2seg.data.datasets.synthetic` registers it as
``d2seg_synthetic_parsing_{train,val}`` with CIHP's metadata.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from d2seg.data.converters.human_parsing import CIHP_ROOT, CIHP_SPLIT_DIRS, prepare_split
from d2seg.data.synthetic.engine import SyntheticSplit, ensure_generated, splits_manifest
from d2seg.data.synthetic.scene import Scene, keep_visible
from d2seg.utils.file_io import atomic_imwrite, atomic_open

GENERATOR_VERSION = 1
"""Bump when the generated content changes; stale copies on disk are regenerated."""

SYNTHETIC_PARSING_DIRNAME = "d2seg_synthetic_parsing"
SYNTHETIC_PARSING_SPLITS = {
    "train": SyntheticSplit(num_images=48, seed=10),
    "val": SyntheticSplit(num_images=24, seed=11),
}

# CIHP part ids the figures are drawn with.
HAT, HAIR, UPPER_CLOTHES, PANTS, FACE = 1, 2, 5, 9, 13
LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, LEFT_SHOE, RIGHT_SHOE = 14, 15, 16, 17, 18, 19

FIGURES_PER_IMAGE = (2, 5)  # [low, high)
FIGURE_HEIGHT = (0.45, 0.9)  # as a fraction of the image height
HAT_PROBABILITY = 0.3
MIN_VISIBLE_PIXELS = 300
SKIN_TONES = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36))


def _ellipse(canvas: np.ndarray, label: int, center, axes) -> None:
    center = (round(center[0]), round(center[1]))
    cv2.ellipse(
        canvas, center, (max(round(axes[0]), 1), max(round(axes[1]), 1)), 0, 0, 360, label, -1
    )


def _limb(canvas: np.ndarray, label: int, start, end, thickness: float) -> None:
    start, end = (round(start[0]), round(start[1])), (round(end[0]), round(end[1]))
    cv2.line(canvas, start, end, label, max(round(thickness), 1), cv2.LINE_8)


def draw_figure(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One figure's (H, W) uint8 part map (0 outside it), in units of an eighth of its height.

    The figure faces the viewer: each "left" part is drawn on the +x side of its body.
    """
    unit = rng.uniform(*FIGURE_HEIGHT) * height / 8
    cx = rng.uniform(0.1, 0.9) * width
    top = rng.uniform(0.02 * height, height - 7.9 * unit)
    canvas = np.zeros((height, width), np.uint8)
    sides = ((+1, LEFT_ARM, LEFT_LEG, LEFT_SHOE), (-1, RIGHT_ARM, RIGHT_LEG, RIGHT_SHOE))
    for side, _, leg, shoe in sides:  # lower legs and shoes, below the pants
        ankle = (cx + side * unit * rng.uniform(0.3, 1.1), top + 7.3 * unit)
        _limb(canvas, leg, (cx + side * 0.4 * unit, top + 5.4 * unit), ankle, 0.5 * unit)
        _ellipse(
            canvas,
            shoe,
            (ankle[0] + side * 0.2 * unit, ankle[1] + 0.25 * unit),
            (0.45 * unit, 0.25 * unit),
        )
    cv2.rectangle(
        canvas,
        (round(cx - 0.8 * unit), round(top + 3.4 * unit)),
        (round(cx + 0.8 * unit), round(top + 4.4 * unit)),
        PANTS,
        -1,
    )
    for side in (+1, -1):
        _limb(
            canvas,
            PANTS,
            (cx + side * 0.45 * unit, top + 4.0 * unit),
            (cx + side * 0.42 * unit, top + 5.6 * unit),
            0.65 * unit,
        )
    for side, arm, _, _ in sides:  # arms hang outwards at their own angle, under the torso
        angle = np.deg2rad(rng.uniform(8, 70))
        shoulder = (cx + side * 0.9 * unit, top + 1.45 * unit)
        hand = (
            shoulder[0] + side * 3.0 * unit * np.sin(angle),
            shoulder[1] + 3.0 * unit * np.cos(angle),
        )
        _limb(canvas, arm, shoulder, hand, 0.45 * unit)
    torso = np.array(
        [
            [cx - 1.0 * unit, top + 1.15 * unit],
            [cx + 1.0 * unit, top + 1.15 * unit],
            [cx + 0.8 * unit, top + 3.6 * unit],
            [cx - 0.8 * unit, top + 3.6 * unit],
        ]
    )
    cv2.fillPoly(canvas, [np.round(torso).astype(np.int32)], UPPER_CLOTHES)
    _ellipse(canvas, HAIR, (cx, top + 0.45 * unit), (0.5 * unit, 0.5 * unit))
    if rng.random() < HAT_PROBABILITY:
        _ellipse(canvas, HAT, (cx, top + 0.12 * unit), (0.62 * unit, 0.22 * unit))
    _ellipse(canvas, FACE, (cx, top + 0.68 * unit), (0.38 * unit, 0.42 * unit))
    return canvas


def _part_colors(rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A figure's colour per part: one skin tone for face, arms and legs, random clothes."""
    skin = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float32)
    colors = {part: skin for part in (FACE, LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG)}
    colors[HAIR] = rng.uniform(10, 90, size=3).astype(np.float32)
    for part in (HAT, UPPER_CLOTHES, PANTS):
        colors[part] = rng.uniform(0, 255, size=3).astype(np.float32)
    colors[LEFT_SHOE] = colors[RIGHT_SHOE] = rng.uniform(0, 80, size=3).astype(np.float32)
    return colors


def render_parsing_scene(
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image with its CIHP maps: RGB image, part ids, person ids (1..N, back to front; 0
    background) and part-instance ids (one per person and part, 1..M)."""
    scene = Scene.with_background(rng)
    height, width = scene.height, scene.width
    figures = [draw_figure(rng, height, width) for _ in range(rng.integers(*FIGURES_PER_IMAGE))]
    visible = keep_visible([figure > 0 for figure in figures], MIN_VISIBLE_PIXELS)
    categories = np.zeros((height, width), np.uint8)
    humans = np.zeros((height, width), np.uint8)
    for person, (index, _) in enumerate(visible, start=1):
        figure = figures[index]
        for part, color in _part_colors(rng).items():
            scene.paint(rng, figure == part, color)
        categories[figure > 0] = figure[figure > 0]
        humans[figure > 0] = person
    pairs = humans.astype(np.int32) * 256 + categories
    _, instances = np.unique(np.where(categories > 0, pairs, 0), return_inverse=True)
    return scene.image(), categories, humans, instances.reshape(height, width).astype(np.uint8)


def write_cihp_layout(root: str, split: str, spec: SyntheticSplit) -> None:
    """Write `spec.num_images` scenes as CIHP's original release writes a split."""
    folder = os.path.join(root, CIHP_ROOT, CIHP_SPLIT_DIRS[split])
    for sub in ("Images", "Category_ids", "Human_ids", "Instance_ids"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    stems = [f"{index:07d}" for index in range(1, spec.num_images + 1)]
    for stem in stems:
        image, categories, humans, instances = render_parsing_scene(rng)
        atomic_imwrite(
            os.path.join(folder, "Images", stem + ".jpg"),
            image[:, :, ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, 95],
        )
        for sub, labels in (
            ("Category_ids", categories),
            ("Human_ids", humans),
            ("Instance_ids", instances),
        ):
            atomic_imwrite(os.path.join(folder, sub, stem + ".png"), labels)
    with atomic_open(os.path.join(folder, f"{split}_id.txt"), "w") as f:
        f.write("".join(stem + "\n" for stem in stems))


def _write_dataset(root: str) -> None:
    for split, spec in SYNTHETIC_PARSING_SPLITS.items():
        write_cihp_layout(root, split, spec)
        prepare_split("cihp", root, split, workers=1)


def ensure_synthetic_parsing_dataset(datasets_root: str) -> str:
    """Generate the synthetic human-parsing data under `datasets_root` unless a current copy is
    there (atomically, see :func:`~d2seg.data.synthetic.engine.ensure_generated`). Returns the
    dataset folder."""
    manifest = splits_manifest(GENERATOR_VERSION, SYNTHETIC_PARSING_SPLITS)
    return ensure_generated(datasets_root, SYNTHETIC_PARSING_DIRNAME, manifest, _write_dataset)
