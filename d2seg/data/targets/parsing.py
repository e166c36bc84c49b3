"""Parsing R-CNN's (Yang et al., CVPR 2019) ground truth as the dataset mapper builds it from
the annotations: each person's part map, and left/right part swapping for horizontal flips.

A person's ground truth is an image-sized map of part ids (0 background). Persons of one image
are kept once, as a (P, H, W) uint8 tensor, and RoIs refer to them by index
(:class:`PersonPartMaps`), so matching hundreds of proposals to their persons copies nothing.
The per-RoI targets cropped from these maps are computed by the model, in
:mod:`d2seg.modeling.roi_heads.parsing_targets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch


class PersonPartMaps:
    """`gt_parsing` of an `Instances`: the image's person part maps, (P, H, W) uint8, shared by
    every row, plus each row's person index. Indexing (as Detectron2 does when it matches
    proposals to ground truth) selects indices and never copies the maps."""

    def __init__(self, maps: torch.Tensor, person_index: torch.Tensor | None = None):
        """
        Args:
            maps: (P, H, W) uint8 part ids, one map per person.
            person_index: which person each row is (default: row i is person i).
        """
        if maps.dim() != 3 or maps.dtype != torch.uint8:
            raise ValueError(
                f"person part maps must be a (P, H, W) uint8 tensor, got {tuple(maps.shape)} "
                f"{maps.dtype}"
            )
        self.maps = maps
        if person_index is None:
            person_index = torch.arange(len(maps), device=maps.device)
        self.person_index = person_index

    def __len__(self) -> int:
        return len(self.person_index)

    def __getitem__(self, item) -> PersonPartMaps:
        selected = self.person_index[item]
        return PersonPartMaps(self.maps, selected.reshape(-1))

    def to(self, *args, **kwargs) -> PersonPartMaps:
        return PersonPartMaps(self.maps.to(*args, **kwargs), self.person_index.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.maps.device


def flip_lookup(flip_pairs: Iterable[Sequence[int]]) -> np.ndarray:
    """A 256-entry uint8 table that swaps the part ids of each (left, right) pair and maps every
    other id (background, unpaired parts, the ignore label 255) to itself.

    Raises:
        ValueError: an id outside 1..254, a pair of one id, or an id in two pairs.
    """
    table = np.arange(256, dtype=np.uint8)
    seen: set[int] = set()
    for pair in flip_pairs:
        if len(pair) != 2:
            raise ValueError(f"parsing_flip_pairs: {pair!r} is not a (left, right) pair")
        left, right = (int(v) for v in pair)
        if left == right or not (0 < left < 255 and 0 < right < 255) or {left, right} & seen:
            raise ValueError(
                f"parsing_flip_pairs: bad pair {pair!r} (ids must be distinct, in 1..254 and in "
                f"one pair only)"
            )
        seen |= {left, right}
        table[left], table[right] = right, left
    return table
