#!/usr/bin/env python
"""Train and evaluate any d2seg or Detectron2 model: Detectron2's standard training script.

The trainer (:class:`d2seg.engine.D2SegTrainer`) takes the mapper from the model the config
builds and the evaluator from each test dataset's `evaluator_type`, so this file never branches
on names.

    python tools/train_net.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth \
        TEST.AUG.ENABLED True   # also with test-time augmentation (TEST.AUG.MIN_SIZES / FLIP)
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, hooks, launch

from d2seg.config import load_config
from d2seg.engine import D2SegCheckpointer
from d2seg.engine import D2SegTrainer as Trainer


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
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:  # after training, also evaluate with test-time augmentation
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))]
        )
    return trainer.train()


def invoke_main(argv: list[str] | None = None) -> None:
    """Parse the command line (`argv`, default sys.argv) and run `main` in every process."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
