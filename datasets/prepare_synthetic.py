#!/usr/bin/env python
"""Generate d2seg's built-in synthetic datasets under $DETECTRON2_DATASETS:
`d2seg_synthetic/` (COCO instance and panoptic formats) and `d2seg_synthetic_parsing/` (human
parsing in CIHP's layout).

Loading any `d2seg_synthetic_*` dataset generates its data too; this script does it up front.
It does nothing when current copies are already there.
"""

from d2seg.data.datasets.builtin import datasets_root
from d2seg.data.synthetic.instance_panoptic import ensure_synthetic_dataset
from d2seg.data.synthetic.parsing import ensure_synthetic_parsing_dataset

if __name__ == "__main__":
    print(f"synthetic dataset ready at {ensure_synthetic_dataset(datasets_root())}")
    print(f"synthetic human parsing ready at {ensure_synthetic_parsing_dataset(datasets_root())}")
