#!/usr/bin/env python
"""Generate d2seg's built-in synthetic dataset under $DETECTRON2_DATASETS/d2seg_synthetic/.

Loading any `d2seg_synthetic_*` dataset generates it too; this script does it up front.
It does nothing when a current copy is already there.
"""

from d2seg.data.datasets.builtin import datasets_root
from d2seg.data.datasets.synthetic import ensure_synthetic_dataset

if __name__ == "__main__":
    print(f"synthetic dataset ready at {ensure_synthetic_dataset(datasets_root())}")
