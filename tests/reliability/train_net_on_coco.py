"""`tools/train_net.py` on COCO-format datasets registered first, in every process it starts:

    python tests/reliability/train_net_on_coco.py --coco NAME JSON IMAGE_ROOT [--coco ...] \\
        TRAIN_NET_ARGS...

The way a user trains d2seg on their own data (Detectron2's `register_coco_instances`)."""

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # runs as a script (and as __mp_main__ in spawned workers)

from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import default_argument_parser, launch  # noqa: E402

from tests.helpers.scripts import load_script  # noqa: E402


def main(args, datasets):
    for name, json_file, image_root in datasets:
        register_coco_instances(name, {}, json_file, image_root)
    return load_script("tools/train_net.py").main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--coco", nargs=3, action="append", default=[])
    known, rest = parser.parse_known_args()
    args = default_argument_parser().parse_args(rest)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, known.coco),
    )
