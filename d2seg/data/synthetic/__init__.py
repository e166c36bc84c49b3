"""d2seg's built-in synthetic datasets, generated on disk in the real datasets' formats.

``engine`` generates a dataset folder once and atomically, ``scene`` draws the images, and one
module per dataset writes its format: ``instance_panoptic`` (COCO instances and panoptic),
``semantic`` (semantic labels derived from the panoptic PNGs), ``parsing`` (CIHP's layout).
Registration lives in :mod:`d2seg.data.datasets.synthetic`.
"""
