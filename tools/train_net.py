#!/usr/bin/env python
"""Train and evaluate any d2seg or Detectron2 model: Detectron2's standard training script.

The mapper comes from the model the config builds and the evaluator from each test dataset's
`evaluator_type`, both looked up inside d2seg, so this file never branches on names.

    python tools/train_net.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
"""

import os

from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.engine import default_argument_parser, default_setup, launch

from d2seg.config import load_config
from d2seg.data import build_test_mapper, build_train_mapper
from d2seg.engine import D2SegCheckpointer, D2SegTrainer, build_resumable_train_loader
from d2seg.evaluation import build_evaluator
from d2seg.solver import build_lr_scheduler, build_optimizer
from d2seg.utils.distributed import cpu_friendly_ddp


class Trainer(D2SegTrainer):
    """DefaultTrainer whose data loaders, evaluators, optimizer and LR schedule come from d2seg
    (each picked by the config, falling back to Detectron2's)."""

    def __init__(self, cfg: CfgNode):
        with cpu_friendly_ddp():  # `--num-gpus N` also trains on CPU
            super().__init__(cfg)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_resumable_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)


def setup(args) -> CfgNode:
    """Detectron2 defaults + d2seg keys, then the config file and the command-line overrides."""
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        D2SegCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
