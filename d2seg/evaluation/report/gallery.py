"""The report's gallery: the best and worst images by an evaluator's per-image score.

Each process keeps two heaps of at most ``size`` entries; only an image entering a heap has
its drawing made (:attr:`ScoredImage.drawing`), and only the chosen ones are drawn, once every
process's heaps are gathered.
"""

from __future__ import annotations

import heapq
import html
import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.data.detection_utils import read_image
from detectron2.utils import comm

from d2seg.evaluation.report.protocol import GalleryDrawing, ScoreDefinition, ScoredImage
from d2seg.utils.file_io import atomic_imwrite

THUMBNAIL_WIDTH = 320  # gallery images are shrunk to at most this width (pixels)

GalleryEntry = tuple[float, str, GalleryDrawing]
"""(score, file name, drawing) of a chosen image."""


class Gallery:
    """The best / worst heaps of one process; :meth:`offer` is the evaluator's sink."""

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"TEST.REPORT.GALLERY_SIZE must be >= 0, got {size}")
        self.size = size
        self.best: list[tuple] = []  # min-heap on score: the largest scores stay
        self.worst: list[tuple] = []  # min-heap on -score: the smallest scores stay

    def __len__(self) -> int:
        return len(self.best) + len(self.worst)

    def offer(self, scored: ScoredImage) -> None:
        """Push the image into the heaps where it belongs; its drawing made once. Images of
        equal score are ordered by (process rank, :attr:`ScoredImage.index`)."""
        key = (comm.get_rank(), scored.index)
        drawing = None
        # the worst heap also reverses the order of ties, so that equal scores are split
        ranks = (
            (self.best, (scored.score, key)),
            (self.worst, (-scored.score, (-key[0], -key[1]))),
        )
        for heap, rank in ranks:
            if len(heap) < self.size or rank > heap[0][:2]:
                drawing = drawing if drawing is not None else scored.drawing()
                entry = (*rank, key, scored.score, scored.file_name, drawing)
                if len(heap) < self.size:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)


def split_gallery(
    galleries: Sequence[Gallery], size: int
) -> tuple[list[GalleryEntry], list[GalleryEntry]]:
    """(best first, worst first) entries of every process's gallery: at most `size` each, no
    image in both (with fewer than 2 x `size` images scored, the better half is "best")."""
    entries = {}
    for gallery in galleries:
        for *_, key, score, file_name, drawing in (*gallery.best, *gallery.worst):
            entries[key] = (score, file_name, drawing)
    # ties: the later image first, as the best heap keeps it
    ranked = [entries[k] for k in sorted(entries, key=lambda k: (entries[k][0], k), reverse=True)]
    num_best = min(size, math.ceil(len(ranked) / 2))
    return ranked[:num_best], ranked[num_best:][::-1][:size]


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """BGR for OpenCV, shrunk to at most :data:`THUMBNAIL_WIDTH` wide."""
    scale = min(1.0, THUMBNAIL_WIDTH / rgb.shape[1])
    if scale < 1.0:
        size = (THUMBNAIL_WIDTH, max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[..., ::-1])


def gallery_section(
    best: list[GalleryEntry],
    worst: list[GalleryEntry],
    score: ScoreDefinition | None,
    assets: str,
) -> str:
    """The gallery's HTML, its images written to ``<assets>/gallery/`` (links relative to the
    page beside `assets`)."""
    if score is None or not (best or worst):
        return "<h2>Gallery</h2><p>No image could be scored.</p>"
    folder = os.path.basename(assets)
    os.makedirs(os.path.join(assets, "gallery"), exist_ok=True)
    groups = []
    for group, entries in (("best", best), ("worst", worst)):
        figures = []
        for index, (value, file_name, drawing) in enumerate(entries):
            image = read_image(file_name, format="RGB")
            links = []
            for which, drawn in (
                ("prediction", drawing.draw_prediction(image)),
                ("ground truth", drawing.draw_ground_truth(image)),
            ):
                name = f"{group}_{index:02d}_{which.replace(' ', '_')}.jpg"
                atomic_imwrite(os.path.join(assets, "gallery", name), thumbnail(drawn))
                links.append(f'<img src="{folder}/gallery/{name}" alt="{which}">')
            caption = html.escape(f"{value:.3f}  {os.path.basename(file_name)}")
            figures.append(
                f'<figure><div class="pair">{"".join(links)}</div>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        if figures:
            groups.append(f"<h3>{group.capitalize()}</h3>" + "".join(figures))
    return (
        f"<h2>Gallery</h2><p>Per-image score ({score.task}): {html.escape(score.definition)}. "
        f"Each image: prediction (left), ground truth (right).</p>" + "".join(groups)
    )
