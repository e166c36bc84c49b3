"""Parsing R-CNN's ground truth as the mapper builds it: person part maps indexed without
copying, and left/right flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d2seg.data.targets.parsing import PersonPartMaps, flip_lookup
from d2seg.modeling.roi_heads.parsing_targets import crop_and_resize_part_maps

CIHP_FLIP_PAIRS = [(14, 15), (16, 17), (18, 19)]


def test_person_part_maps_index_without_copying():
    maps = torch.randint(0, 20, (3, 10, 12), dtype=torch.uint8)
    gt = PersonPartMaps(maps)
    picked = gt[torch.tensor([2, 2, 0, 1, 2])]
    assert len(picked) == 5 and picked.maps is maps
    assert picked[torch.tensor([True, False, True, False, False])].person_index.tolist() == [2, 0]
    assert picked[1].person_index.tolist() == [2]
    box = torch.tensor([[0.0, 0.0, 12.0, 10.0]])
    np.testing.assert_array_equal(
        crop_and_resize_part_maps(picked.maps, picked[3].person_index, box, 10)[0].numpy(),
        maps[1, :, ::1][:, (np.arange(10) * 12) // 10].numpy(),
    )
    with pytest.raises(ValueError, match="uint8"):
        PersonPartMaps(maps.long())


def test_flip_lookup_swaps_exactly_the_pairs():
    table = flip_lookup(CIHP_FLIP_PAIRS)
    expected = list(range(256))
    for left, right in CIHP_FLIP_PAIRS:
        expected[left], expected[right] = right, left
    assert table.tolist() == expected
    assert table.dtype == np.uint8 and (table[table] == np.arange(256)).all()
    for bad in ([(3, 3)], [(1, 2), (2, 5)], [(0, 4)], [(1, 255)], [(1, 2, 3)]):
        with pytest.raises(ValueError, match="parsing_flip_pairs"):
            flip_lookup(bad)
