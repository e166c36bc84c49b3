from d2seg.data import datasets  # noqa: F401  (registration only)
from d2seg.data.mappers import build_test_mapper, build_train_mapper
from d2seg.data.mappers import panoptic_deeplab as _panoptic_deeplab_mapper  # noqa: F401
from d2seg.data.mappers import parsing as _parsing_mapper  # noqa: F401
from d2seg.data.mappers import sem_seg as _sem_seg_mapper  # noqa: F401

__all__ = ["build_test_mapper", "build_train_mapper"]
