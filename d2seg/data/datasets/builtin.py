"""Registers every d2seg dataset under $DETECTRON2_DATASETS when d2seg is imported.

COCO (instances and panoptic) uses Detectron2's own registrations, which are not repeated here.
"""

import os

from d2seg.data.datasets.cityscapes import register_all_cityscapes
from d2seg.data.datasets.human_parsing import register_all_human_parsing
from d2seg.data.datasets.synthetic import register_all_synthetic


def datasets_root() -> str:
    """The datasets folder, as Detectron2 reads it: $DETECTRON2_DATASETS, default ./datasets."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def register_all(root: str) -> None:
    """Register every dataset family d2seg adds, with its files under `root`."""
    register_all_synthetic(root)
    register_all_cityscapes(root)
    register_all_human_parsing(root)


register_all(datasets_root())
