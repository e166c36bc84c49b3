"""Registers every d2seg dataset under $DETECTRON2_DATASETS when d2seg is imported.

COCO (instances and panoptic) uses Detectron2's own registrations, which are not repeated here.
"""

import os

from d2seg.data.datasets.cityscapes import register_all_cityscapes
from d2seg.data.datasets.human_parsing import register_all_human_parsing
from d2seg.data.datasets.synthetic import register_all_synthetic
from d2seg.data.datasets.synthetic_parsing import register_all_synthetic_parsing
from d2seg.data.datasets.synthetic_sem_seg import register_all_synthetic_sem_seg


def datasets_root() -> str:
    """The datasets folder, as Detectron2 reads it: $DETECTRON2_DATASETS, default ./datasets."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def register_all(root: str) -> None:
    register_all_synthetic(root)
    register_all_cityscapes(root)
    register_all_human_parsing(root)
    register_all_synthetic_parsing(root)
    register_all_synthetic_sem_seg(root)


register_all(datasets_root())
