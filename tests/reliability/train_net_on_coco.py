"""`tools/train_net.py` on COCO-format datasets registered first, in every process it starts:

    python tests/reliability/train_net_on_coco.py --coco NAME JSON IMAGE_ROOT [--coco ...] \\
        TRAIN_NET_ARGS...

The way a user trains d2seg on their own data: register with Detectron2's
`register_coco_instances` at module level, then hand the command line to train_net's
`invoke_main`. Detectron2's `launch` starts its processes with spawn, which imports this file
again in each (as __mp_main__, with this command line), so every process registers the
datasets and loads train_net (whose `main` the processes receive by reference) before it runs.
"""

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # runs as a script (and as __mp_main__ in spawned workers)

from detectron2.data.datasets import register_coco_instances  # noqa: E402

from tests.helpers.scripts import load_script  # noqa: E402

_parser = argparse.ArgumentParser(add_help=False)
_parser.add_argument("--coco", nargs=3, action="append", default=[])
_datasets, TRAIN_NET_ARGV = _parser.parse_known_args()
for name, json_file, image_root in _datasets.coco:
    register_coco_instances(name, {}, json_file, image_root)
train_net = load_script("tools/train_net.py")

if __name__ == "__main__":
    train_net.invoke_main(TRAIN_NET_ARGV)
