"""Semantic labels derived from the synthetic panoptic data."""

from pathlib import Path

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from d2seg.data.synthetic import semantic
from d2seg.data.synthetic.semantic import panoptic_to_semantic, segment_borders


def test_segment_borders_match_a_neighbour_loop():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(7, 9))
    expected = np.zeros_like(ids, bool)
    for i in range(7):
        for j in range(9):
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= i + di < 7 and 0 <= j + dj < 9 and ids[i + di, j + dj] != ids[i, j]:
                    expected[i, j] = True
    assert (segment_borders(ids) == expected).all()


def test_every_thing_and_stuff_class_is_labelled_with_255_on_borders():
    ids = np.zeros((6, 6), np.int32)
    ids[:, :3], ids[:, 3:], ids[2:4, 1:2] = 1, 2, 3  # sky | grass, a circle inside the sky
    segments = [
        {"id": 1, "category_id": 4},
        {"id": 2, "category_id": 5},
        {"id": 3, "category_id": 1},
    ]
    labels = panoptic_to_semantic(ids, segments)
    assert labels[0, 0] == 3 and labels[0, 5] == 4  # sky, grass (contiguous order 0..5)
    assert labels[2, 1] == 255 and labels[:, 2].tolist() == [255] * 6  # borders
    assert labels[3, 1] == 255 and (labels == 0).sum() == 0  # the 2-px circle is all border
    labels = panoptic_to_semantic(np.full((2, 2), 7), [{"id": 7, "category_id": 1}])
    assert labels.tolist() == [[0, 0], [0, 0]]  # a thing (circle) is class 0


def test_labels_are_derived_from_the_panoptic_pngs(synthetic_root):
    """Written once from the current panoptic copy; a second call rewrites nothing."""
    root = Path(semantic.ensure_synthetic_sem_seg_dataset(str(synthetic_root.parent)))
    label_file = root / "sem_seg_val" / "val_000003.png"
    labels = np.asarray(Image.open(label_file))
    ids = rgb2id(np.asarray(Image.open(synthetic_root / "panoptic_val" / "val_000003.png")))
    borders = segment_borders(ids)
    assert labels.shape == ids.shape
    assert (labels[borders] == 255).all() and (labels[~borders] < 6).all()
    inode = label_file.stat().st_ino  # files are replaced on write, so a rewrite changes it
    assert semantic.ensure_synthetic_sem_seg_dataset(str(synthetic_root.parent)) == str(root)
    assert label_file.stat().st_ino == inode
