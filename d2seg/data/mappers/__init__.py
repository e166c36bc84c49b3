"""Dataset mappers, picked from the model a config builds (:mod:`d2seg.data.mappers.build`).

Each mapper module below registers its mapper on import; this package imports them all.
"""

from d2seg.data.mappers import panoptic_deeplab, parsing, sem_seg  # noqa: F401  (registration only)
from d2seg.data.mappers.base import D2SegDatasetMapper
from d2seg.data.mappers.build import (
    MAPPERS,
    build_test_mapper,
    build_train_mapper,
    register_mapper,
)

__all__ = [
    "MAPPERS",
    "D2SegDatasetMapper",
    "build_test_mapper",
    "build_train_mapper",
    "register_mapper",
]
