"""The semantic training mapper: MMSegmentation's resize, category-constrained crop, flip and
photometric distortion."""

from __future__ import annotations

from d2seg.data import build_train_mapper
from tests.helpers.sem_seg_heads import (
    tiny_model_cfg,
)


def test_training_mapper_crops_with_the_category_area_constraint(synthetic_root):
    cfg = tiny_model_cfg(opts=["INPUT.PHOTOMETRIC_DISTORTION", "True"])
    augs = [type(a).__name__ for a in build_train_mapper(cfg).augmentations.augs]
    assert augs[:3] == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "RandomFlip"]
    assert augs[3:] == ["RandomApply"] * 3
    cfg = tiny_model_cfg(opts=["INPUT.SEM_SEG_SCALE", "(2048, 1024)"])
    assert type(build_train_mapper(cfg).augmentations.augs[0]).__name__ == "ResizeScale"
