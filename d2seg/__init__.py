"""d2seg: a Detectron2 plugin for instance, panoptic and human-part segmentation.

Importing d2seg registers its datasets, models and evaluators with Detectron2.
"""

from d2seg import data, evaluation, modeling  # noqa: F401  (registration only)
from d2seg.config import add_d2seg_config

__version__ = "0.1.0"
__all__ = ["add_d2seg_config"]
