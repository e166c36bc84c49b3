from d2seg.data import datasets  # noqa: F401  (registration only)
from d2seg.data.mappers import build_test_mapper, build_train_mapper

__all__ = ["build_test_mapper", "build_train_mapper"]
