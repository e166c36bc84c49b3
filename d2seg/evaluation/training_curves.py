"""PNG plots of the losses and evaluation metrics that Detectron2's ``JSONWriter`` logs to
``metrics.json`` (one json object per line, each with its ``iteration``), so that a run can be
followed without TensorBoard (``tools/plot_metrics.py OUTPUT_DIR``; the evaluation report shows
the same plots).

- ``losses.png``: one panel per loss (``total_loss``, ``loss_*``) and the learning rate;
- ``eval_<task>.png`` for each evaluated task (``bbox``, ``segm``, ``sem_seg``,
  ``panoptic_seg``, ``parsing``, ...): its headline metrics in one panel, its per-class metrics
  (``AP-<class>``, ``IoU-<class>``, ...) in a second.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

from d2seg.utils.file_io import atomic_open

EVAL_TASKS = ("bbox", "segm", "keypoints", "sem_seg", "panoptic_seg", "parsing")
"""Top-level keys of Detectron2's / d2seg's evaluation results (``metrics.json`` flattens them
to ``task/metric``); other ``a/b`` keys (``fast_rcnn/cls_accuracy``, ...) are training stats."""
PER_CLASS_PREFIXES = ("AP", "IoU", "ACC")
"""``<prefix>-<class name>`` result keys are per-class (COCO ``AP-``, SemSeg ``IoU-``/``ACC-``,
parsing ``IoU-``); class names may themselves contain ``-``."""
_LEGEND_LIMIT = 20  # per-class panels name at most this many classes in their legend


def split_per_class(metric: str) -> tuple[str, str] | None:
    """(prefix, class name) of a per-class metric name such as ``IoU-wall-other``, else None."""
    prefix, dash, name = metric.partition("-")
    return (prefix, name) if dash and name and prefix in PER_CLASS_PREFIXES else None


def load_metrics(path: str) -> list[dict]:
    """The records of a ``metrics.json``; a line cut short by a run still writing it is
    skipped, any other bad line raises naming the file and line."""
    records = []
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # the writer is appending this line right now
                break
            raise ValueError(f"{path}, line {number}: not json ({error})") from error
        if not isinstance(record, dict) or "iteration" not in record:
            raise ValueError(f"{path}, line {number}: no 'iteration' in {line[:80]!r}")
        records.append(record)
    return records


def series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Every numeric key's (iterations, values), in file order."""
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for record in records:
        for key, value in record.items():
            if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                out[key][0].append(record["iteration"])
                out[key][1].append(float(value))
    return dict(out)


def _save(figure, path: str) -> None:
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=80)


def plot_metrics(metrics_path: str, out_dir: str) -> list[str]:
    """Write ``losses.png`` and ``eval_<task>.png`` (module docstring) to `out_dir` from the
    ``metrics.json`` at `metrics_path`; returns the written paths (none for a file without
    losses or metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    data = series(load_metrics(metrics_path))
    os.makedirs(out_dir, exist_ok=True)
    written = []
    losses = sorted(k for k in data if k == "total_loss" or k.startswith("loss")) + [
        k for k in ("lr",) if k in data
    ]
    if losses:
        columns = min(3, len(losses))
        rows = math.ceil(len(losses) / columns)
        figure = Figure(figsize=(4.5 * columns, 3 * rows), layout="constrained")
        for index, key in enumerate(losses):
            axes = figure.add_subplot(rows, columns, index + 1)
            axes.plot(*data[key], marker="." if len(data[key][0]) < 20 else None)
            axes.set_title(key)
            axes.set_xlabel("iteration")
            axes.grid(alpha=0.3)
        written.append(os.path.join(out_dir, "losses.png"))
        _save(figure, written[-1])
    for task in EVAL_TASKS:
        keys = sorted(k for k in data if k.startswith(task + "/"))
        if not keys:
            continue
        per_class = [k for k in keys if split_per_class(k[len(task) + 1 :])]
        headline = [k for k in keys if k not in per_class]
        panels = [(f"{task}: headline metrics", headline), (f"{task}: per class", per_class)]
        panels = [(title, group) for title, group in panels if group]
        figure = Figure(figsize=(6.5 * len(panels), 4), layout="constrained")
        for index, (title, group) in enumerate(panels):
            axes = figure.add_subplot(1, len(panels), index + 1)
            for key in group:
                axes.plot(*data[key], marker="o", label=key[len(task) + 1 :])
            axes.set_title(title)
            axes.set_xlabel("iteration")
            axes.grid(alpha=0.3)
            if len(group) <= _LEGEND_LIMIT:
                axes.legend(fontsize="small", loc="best")
        written.append(os.path.join(out_dir, f"eval_{task}.png"))
        _save(figure, written[-1])
    return written
