"""Training targets of Panoptic-DeepLab (Cheng et al., CVPR 2020, sec. 3.2), from a panoptic map.

Follows the authors' reference target generator (bowenc0221/panoptic-deeplab, also Detectron2's
Panoptic-DeepLab project):

- semantic labels: each segment's class; pixels of no segment are `ignore_label`;
- semantic weights: 1, or `small_instance_weight` (3) on thing segments smaller than
  `small_instance_area` (64 x 64 = 4096 pixels, measured after augmentation);
- center heatmap: a Gaussian (sigma 8) at each thing segment's centre of mass (rounded to a
  pixel), truncated at 3 sigma + 1 pixels, pixel-wise max where Gaussians overlap; crowd
  segments get a centre too, as in the reference;
- offsets (dy, dx): the exact centre of mass minus the pixel's coordinates, on thing pixels;
- center weights: 1 on every labelled non-crowd pixel; offset weights: 1 on non-crowd thing
  pixels (stuff too when `ignore_stuff_in_offset` is off).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PanopticDeepLabTargetGenerator:
    """Callable: (panoptic segment ids (H, W), segments_info) -> dict of target arrays.

    `segments_info` entries need `id`, `category_id` (contiguous) and `iscrowd`.
    """

    thing_ids: frozenset[int]
    ignore_label: int = 255
    sigma: float = 8.0  # paper sec. 3.2
    small_instance_area: int = 4096  # 64 x 64 (reference INPUT.SMALL_INSTANCE_AREA)
    small_instance_weight: float = 3.0  # reference INPUT.SMALL_INSTANCE_WEIGHT
    ignore_crowd_in_semantic: bool = False
    ignore_stuff_in_offset: bool = True

    def gaussian(self) -> np.ndarray:
        """The (6 sigma + 3)^2 kernel drawn at each centre; its peak is at the middle."""
        radius = int(round(3 * self.sigma + 1))
        coords = np.arange(-radius, radius + 1, dtype=np.float64)
        return np.exp(-(coords[None, :] ** 2 + coords[:, None] ** 2) / (2 * self.sigma ** 2))

    def __call__(self, panoptic: np.ndarray, segments_info: Iterable[Mapping]) -> dict:
        height, width = panoptic.shape
        semantic = np.full((height, width), self.ignore_label, dtype=np.int64)
        semantic_weights = np.ones((height, width), dtype=np.float32)
        center = np.zeros((height, width), dtype=np.float32)
        offset = np.zeros((2, height, width), dtype=np.float32)
        center_weights = np.zeros((height, width), dtype=np.float32)
        offset_weights = np.zeros((height, width), dtype=np.float32)
        kernel = self.gaussian()
        radius = kernel.shape[0] // 2
        centers = []
        for segment in segments_info:
            mask = panoptic == segment["id"]
            category = segment["category_id"]
            is_thing = category in self.thing_ids
            if not (self.ignore_crowd_in_semantic and segment["iscrowd"]):
                semantic[mask] = category
            if not segment["iscrowd"]:
                center_weights[mask] = 1
                if is_thing or not self.ignore_stuff_in_offset:
                    offset_weights[mask] = 1
            if not is_thing:
                continue
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            if len(ys) < self.small_instance_area:
                semantic_weights[mask] = self.small_instance_weight
            center_y, center_x = ys.mean(), xs.mean()
            centers.append((center_y, center_x))
            y, x = int(round(center_y)), int(round(center_x))
            y0, y1 = max(y - radius, 0), min(y + radius + 1, height)
            x0, x1 = max(x - radius, 0), min(x + radius + 1, width)
            if y0 < y1 and x0 < x1:
                patch = kernel[y0 - y + radius: y1 - y + radius, x0 - x + radius: x1 - x + radius]
                np.maximum(center[y0:y1, x0:x1], patch, out=center[y0:y1, x0:x1])
            offset[0, ys, xs] = center_y - ys
            offset[1, ys, xs] = center_x - xs
        return {
            "sem_seg": semantic,
            "sem_seg_weights": semantic_weights,
            "center": center[None],
            "center_points": np.asarray(centers, dtype=np.float32).reshape(-1, 2),
            "offset": offset,
            "center_weights": center_weights,
            "offset_weights": offset_weights,
        }
