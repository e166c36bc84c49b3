#!/usr/bin/env python
"""Plot the losses and evaluation metrics of a training run's ``metrics.json`` as PNGs.

    python tools/plot_metrics.py output/quickstart/mask_rcnn_R_18_FPN_synthetic
    python tools/plot_metrics.py OUTPUT_DIR --out plots/

Writes ``losses.png`` and one ``eval_<task>.png`` per evaluated task to ``OUTPUT_DIR/plots``
(or ``--out``); see ``d2seg/evaluation/training_curves.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from d2seg.evaluation.training_curves import plot_metrics


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a training OUTPUT_DIR holding metrics.json")
    parser.add_argument("--out", help="folder for the PNGs (default: OUTPUT_DIR/plots)")
    args = parser.parse_args(argv)
    metrics = os.path.join(args.output_dir, "metrics.json")
    if not os.path.isfile(metrics):
        parser.error(f"{metrics} does not exist: is {args.output_dir!r} a training OUTPUT_DIR?")
    written = plot_metrics(metrics, args.out or os.path.join(args.output_dir, "plots"))
    if not written:
        print(f"{metrics} has no losses or evaluation metrics to plot", file=sys.stderr)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
