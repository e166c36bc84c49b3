"""Shared fixtures: the generated synthetic data, the real COCO sample, a miniature Cityscapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "coco_panoptic_sample"
# d2seg registers its datasets under $DETECTRON2_DATASETS when it is imported: set it first
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO_ROOT / "datasets"))

import d2seg  # noqa: E402, F401  (registers datasets, models and evaluators)
from d2seg.data.datasets.builtin import datasets_root  # noqa: E402
from d2seg.data.synthetic.instance_panoptic import ensure_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_root() -> Path:
    """The generated synthetic dataset (created on first use, as training would)."""
    return Path(ensure_synthetic_dataset(datasets_root()))


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    """The two real COCO images with panoptic and instance annotations in ../shared."""
    if not COCO_SAMPLE.is_dir():
        pytest.skip(f"real COCO sample not found at {COCO_SAMPLE}")
    return COCO_SAMPLE


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory) -> Path:
    """A miniature Cityscapes tree in the real layout, with derived files prepared."""
    from tests.helpers.cityscapes_tree import make_cityscapes_tree

    root = tmp_path_factory.mktemp("datasets") / "cityscapes"
    make_cityscapes_tree(root)
    return root
