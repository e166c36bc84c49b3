from d2seg.data.datasets import builtin  # noqa: F401  (registration only)
