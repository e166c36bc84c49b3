"""The evaluation report: ``report.html`` beside every evaluation's results.

:func:`d2seg.evaluation.build_evaluator` wraps a dataset's evaluators in a
:class:`ReportEvaluator` (``TEST.REPORT.ENABLED``), which runs them unchanged and, on the main
process, after they have computed their metrics, writes a self-contained page (inline CSS and
JS, images as files in ``report_files/`` beside it, nothing from the network):

- the headline metrics of every task, with the README's reference numbers for the config
  (:mod:`d2seg.evaluation.reference_results`, ``TEST.REPORT.CONFIG_FILE``);
- the training curves of ``OUTPUT_DIR/metrics.json`` where it exists
  (:mod:`d2seg.evaluation.training_curves`);
- a per-class table per task (AP, PQ / SQ / RQ / TP / FP / FN, IoU / accuracy, part IoU), sorted
  by clicking any column header;
- precision-recall curves of COCO box / mask AP (``FastCOCOEvaluator.precisions``: area "all",
  the largest maxDets, averaged over the categories with ground truth, as COCO AP averages);
- the confusion matrix of Detectron2's ``SemSegEvaluator`` and of ``ParsingEvaluator``;
- a gallery of the ``TEST.REPORT.GALLERY_SIZE`` best and worst images by the task's per-image
  score (:mod:`d2seg.evaluation.per_image_scores`), each prediction beside its ground truth.

The gallery keeps, per process, two heaps of at most ``GALLERY_SIZE`` (score, image) entries;
only an image entering a heap keeps its outputs (moved to the CPU, instances below the drawing
threshold dropped), and only the chosen ones are drawn, in ``evaluate()``. The evaluators see
every image exactly as without the report; the gallery's own time is logged and shown on the
page. With ``TEST.REPORT.GALLERY`` off nothing is scored or kept. The ground truth of the
gallery comes from the dataset's records, loaded once more (``DatasetCatalog.get``) on the
first image, since the test mapper drops annotations.
"""

from __future__ import annotations

import collections
import datetime
import heapq
import html
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances, read_image
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from d2seg.evaluation.coco_backend import FastCOCOEvaluator
from d2seg.evaluation.panoptic_evaluation import FastCOCOPanopticEvaluator
from d2seg.evaluation.parsing_evaluation import ParsingEvaluator
from d2seg.evaluation.per_image_scores import (
    CONFIDENT_SCORE,
    SCORE_NAMES,
    confusion_score,
    instance_score,
    panoptic_score,
    semantic_score,
)
from d2seg.evaluation.reference_results import reference_for
from d2seg.evaluation.training_curves import plot_metrics, split_per_class
from d2seg.utils.file_io import atomic_imwrite, atomic_open
from d2seg.utils.visualizer import draw_predictions

logger = logging.getLogger(__name__)

ASSETS = "report_files"
"""Folder beside ``report.html`` holding its images (relative links)."""
THUMBNAIL_WIDTH = 320  # gallery images are shrunk to at most this width (pixels)
_PR_IOUS = ((0, "IoU 0.50"), (5, "IoU 0.75"), (None, "IoU 0.50:0.95"))  # COCO's 10 thresholds
_COLORS = ("#1f77b4", "#d62728", "#2ca02c")


class ReportEvaluator(DatasetEvaluators):
    """Detectron2's ``DatasetEvaluators`` over a dataset's evaluators that also writes
    ``report.html`` to `output_dir` (module docstring). Results are the evaluators' own."""

    def __init__(
        self,
        evaluators: Sequence[DatasetEvaluator],
        dataset_name: str,
        output_dir: str,
        *,
        gallery_size: int = 8,
        config_file: str = "",
        metrics_path: str | None = None,
    ):
        """
        Args:
            evaluators: the dataset's evaluators (their results are returned unchanged).
            dataset_name: the evaluated dataset (its records give the ground truth drawn).
            output_dir: where ``report.html`` and ``report_files/`` go.
            gallery_size: at most this many best and this many worst images; 0: no gallery.
            config_file: the run's config, for the README's reference numbers.
            metrics_path: a training run's ``metrics.json``, plotted when it exists.
        """
        if gallery_size < 0:
            raise ValueError(f"TEST.REPORT.GALLERY_SIZE must be >= 0, got {gallery_size}")
        super().__init__(list(evaluators))
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._gallery_size = gallery_size
        self._config_file = config_file
        self._metrics_path = metrics_path
        self._metadata = MetadataCatalog.get(dataset_name)
        self._records: dict[str, dict] | None = None
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._best: list[tuple] = []  # min-heap on score: the largest scores stay
        self._worst: list[tuple] = []  # min-heap on -score: the smallest scores stay
        self._num_images = 0
        self._task: str | None = None
        self._gallery_seconds = 0.0
        self._unscored: collections.deque[tuple] = collections.deque()  # (key, file, score, kept)

    def _find(self, kind: type) -> DatasetEvaluator | None:
        return next((e for e in self._evaluators if isinstance(e, kind)), None)

    def process(self, inputs, outputs) -> None:
        if not self._gallery_size:
            super().process(inputs, outputs)
            self._num_images += len(inputs)
            return
        for input_, output in zip(inputs, outputs):  # one at a time: each image's own stats
            super().process([input_], [output])
            start = time.perf_counter()
            if "file_name" not in input_:
                raise KeyError(
                    f"an input of {self._dataset_name!r} has no 'file_name' (keys "
                    f"{sorted(input_)}): the report's gallery needs it (TEST.REPORT.GALLERY off)"
                )
            key = (comm.get_rank(), self._num_images)
            self._unscored.append((key, input_["file_name"], *self._score(input_, output)))
            self._offer_scored()
            self._num_images += 1
            self._gallery_seconds += time.perf_counter() - start

    def _offer_scored(self) -> None:
        """Offer the images whose score is known, in order. A panoptic image's score is its
        ``FastCOCOPanopticEvaluator`` item, whose statistics come one ``process()`` call later
        (that evaluator's pipeline) or in its ``evaluate()``."""
        while self._unscored:
            key, file_name, score, compact = self._unscored[0]
            if isinstance(score, dict):
                if "stats" not in score:
                    return
                score = panoptic_score(score["stats"])
            self._unscored.popleft()
            if score is not None:
                self._offer(score, key, file_name, compact)

    def _record(self, file_name: str) -> dict:
        if self._records is None:
            self._records = {r["file_name"]: r for r in DatasetCatalog.get(self._dataset_name)}
        if file_name not in self._records:
            raise KeyError(f"image {file_name!r} is not in dataset {self._dataset_name!r}")
        return self._records[file_name]

    def _choose_task(self, record: dict, output: Mapping) -> str | None:
        if self._find(ParsingEvaluator) and "instances" in output:
            return "parsing"
        if self._find(FastCOCOPanopticEvaluator) and "panoptic_seg" in output:
            return "panoptic"
        if "instances" in output and "annotations" in record:
            return "instance"
        if "sem_seg" in output and "sem_seg_file_name" in record:
            return "semantic"
        return None

    def _score(
        self, input_: Mapping, output: Mapping
    ) -> tuple[float | dict | None, Callable[[], dict]]:
        """The image's score (None: not scorable; for a panoptic image, its
        ``FastCOCOPanopticEvaluator`` item, scored later) and a function making the outputs to
        keep."""
        record = self._record(input_["file_name"])
        if self._task is None:
            self._task = self._choose_task(record, output)
        if self._task == "parsing":
            stats = self._find(ParsingEvaluator)._stats[-1]
            score = None if stats.confusion is None else confusion_score(stats.confusion)
            return score, lambda: _confident_instances(output, "parsing_scores")
        if self._task == "panoptic":
            item = self._find(FastCOCOPanopticEvaluator)._predictions[-1]
            if item["image_id"] != input_["image_id"]:
                raise RuntimeError(f"the panoptic evaluator did not record {input_['image_id']!r}")
            ids, segments_info = output["panoptic_seg"]
            return item, lambda: {"panoptic_seg": (ids.to("cpu"), segments_info)}
        if self._task == "instance":
            return _instance_record_score(record, output), lambda: _confident_instances(output)
        if self._task == "semantic":
            labels = output["sem_seg"].argmax(dim=0).to("cpu").numpy()
            with Image.open(record["sem_seg_file_name"]) as image:
                gt = np.asarray(image)
            classes = len(self._metadata.stuff_classes)
            score = semantic_score(gt, labels, classes, self._metadata.get("ignore_label", 255))
            return score, lambda: {"sem_seg_labels": labels.astype(np.int32)}
        return None, dict

    def _offer(
        self, score: float, key: tuple[int, int], file_name: str, compact: Callable[[], dict]
    ) -> None:
        """Push the image into the best / worst heaps where it belongs; outputs kept once.
        `key` (rank, image number) orders images of equal score."""
        kept = None
        # the worst heap also reverses the order of ties, so that equal scores are split
        for heap, rank in ((self._best, (score, key)), (self._worst, (-score, (-key[0], -key[1])))):
            if len(heap) < self._gallery_size or rank > heap[0][:2]:
                kept = kept if kept is not None else compact()
                entry = (*rank, key, score, file_name, kept)
                if len(heap) < self._gallery_size:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)

    def evaluate(self):
        start = time.perf_counter()
        results = super().evaluate()
        metric_seconds = time.perf_counter() - start
        self._offer_scored()  # the last panoptic image, scored by the evaluators' evaluate()
        if self._unscored:
            raise RuntimeError(f"{len(self._unscored)} images of the gallery were never scored")
        heaps = comm.gather((self._best, self._worst, self._num_images, self._gallery_seconds))
        if not comm.is_main_process():
            return results
        try:
            path = self.write_report(results or {}, heaps, metric_seconds)
            logger.info(f"evaluation report of {self._dataset_name}: {path}")
        except Exception:  # a report must not end a training run: the metrics stand
            logger.exception(f"writing the evaluation report of {self._dataset_name} failed")
        return results

    def write_report(self, results: Mapping, heaps: list, metric_seconds: float = 0.0) -> str:
        """Write ``report.html`` (and its images) for `results` and the gathered gallery heaps;
        returns its path."""
        start = time.perf_counter()
        assets = os.path.join(self._output_dir, ASSETS)
        os.makedirs(assets, exist_ok=True)
        best, worst = _split_gallery(heaps, self._gallery_size)
        num_images = sum(h[2] for h in heaps)
        scoring_seconds = sum(h[3] for h in heaps)
        sections = [
            _headline_section(results, reference_for(self._config_file or "")),
            self._curves_section(assets),
            self._per_class_section(results),
            self._pr_section(),
            self._confusion_section(),
        ]
        if self._gallery_size:
            sections.append(self._gallery_section(best, worst, assets))
        timing = (
            f"metrics (evaluators' evaluate()): {metric_seconds:.2f} s; gallery scoring in "
            f"process(): {scoring_seconds:.2f} s; report drawing: "
            f"{time.perf_counter() - start:.2f} s"
        )
        page = _page(
            title=f"Evaluation report: {self._dataset_name}",
            intro=[
                ("dataset", f"{self._dataset_name} ({num_images} images evaluated)"),
                ("config", self._config_file or "(not given)"),
                ("evaluators", ", ".join(type(e).__name__ for e in self._evaluators)),
                ("written", datetime.datetime.now().isoformat(timespec="seconds")),
                ("time", timing),
            ],
            sections=[s for s in sections if s],
        )
        path = os.path.join(self._output_dir, "report.html")
        with atomic_open(path, "w") as f:
            f.write(page)
        return path

    def _curves_section(self, assets: str) -> str:
        if not self._metrics_path or not os.path.isfile(self._metrics_path):
            return ""
        written = plot_metrics(self._metrics_path, os.path.join(assets, "curves"))
        images = "".join(
            f'<img class="curve" src="{ASSETS}/curves/{os.path.basename(p)}" alt="">'
            for p in written
        )
        where = html.escape(self._metrics_path)
        return f"<h2>Training curves</h2><p>From <code>{where}</code>.</p>{images}"

    def _per_class_section(self, results: Mapping) -> str:
        tables = []
        panoptic = self._find(FastCOCOPanopticEvaluator)
        if panoptic is not None and panoptic.pq_results:
            categories = panoptic._load_ground_truth()["content"]["categories"]
            rows = []
            for category in categories:
                values = panoptic.pq_results["per_class"][category["id"]]
                rows.append(
                    [category.get("name", str(category["id"]))]
                    + [(None, 100 * values[k]) for k in ("pq", "sq", "rq")]
                    + [(None, values[k]) for k in ("tp", "fp", "fn")]
                )
            tables.append(
                _table("panoptic_seg", ["category", "PQ", "SQ", "RQ", "TP", "FP", "FN"], rows)
            )
        for task, metrics in results.items():
            by_class: dict[str, dict[str, tuple[str, float]]] = {}
            prefixes: list[str] = []
            for metric, value in metrics.items():
                split = split_per_class(metric)
                if split is None:
                    continue
                prefix, name = split
                prefixes += [prefix] if prefix not in prefixes else []
                by_class.setdefault(name, {})[prefix] = (f"{task}/{metric}", value)
            if by_class:
                rows = [
                    [name] + [values.get(p, (None, math.nan)) for p in prefixes]
                    for name, values in by_class.items()
                ]
                tables.append(_table(task, ["class", *prefixes], rows))
        if not tables:
            return ""
        return "<h2>Per class</h2><p>Click a column header to sort.</p>" + "".join(tables)

    def _pr_section(self) -> str:
        charts = []
        for evaluator in self._evaluators:
            if isinstance(evaluator, FastCOCOEvaluator):
                charts += [_pr_svg(task, p) for task, p in sorted(evaluator.precisions.items())]
        if not charts:
            return ""
        note = (
            "COCO precision at 101 recall points, area all, the largest maxDets, averaged "
            "over the categories with ground truth; the mean of a curve is its AP."
        )
        return f"<h2>Precision-recall</h2><p>{note}</p>" + "".join(charts)

    def _confusion_section(self) -> str:
        parts = []
        sem_seg = self._find(SemSegEvaluator)
        if sem_seg is not None and getattr(sem_seg, "_conf_matrix", None) is not None:
            # Detectron2 counts prediction by row, ground truth by column, ignore last
            confusion = sem_seg._conf_matrix[:-1, :-1].T
            parts.append(_confusion_table("sem_seg", confusion, self._metadata.stuff_classes))
        parsing = self._find(ParsingEvaluator)
        if parsing is not None and parsing.confusion is not None:
            parts.append(
                _confusion_table("parsing", parsing.confusion, self._metadata.parsing_classes)
            )
        if not parts:
            return ""
        return (
            "<h2>Confusion matrix</h2><p>Rows: ground truth, columns: prediction; each cell is "
            "the share of its row's pixels (hover for the count).</p>" + "".join(parts)
        )

    def _gallery_section(self, best: list[tuple], worst: list[tuple], assets: str) -> str:
        if self._task is None and not best:
            return "<h2>Gallery</h2><p>No image could be scored.</p>"
        os.makedirs(os.path.join(assets, "gallery"), exist_ok=True)
        groups = []
        for group, entries in (("best", best), ("worst", worst)):
            figures = []
            for index, (score, file_name, kept) in enumerate(entries):
                record = self._record(file_name)
                image = read_image(file_name, format="RGB")
                links = []
                for which, drawn in (
                    ("prediction", self._draw_prediction(image, kept)),
                    ("ground truth", self._draw_ground_truth(image, record)),
                ):
                    name = f"{group}_{index:02d}_{which.replace(' ', '_')}.jpg"
                    atomic_imwrite(os.path.join(assets, "gallery", name), _thumbnail(drawn))
                    links.append(f'<img src="{ASSETS}/gallery/{name}" alt="{which}">')
                caption = html.escape(f"{score:.3f}  {os.path.basename(file_name)}")
                figures.append(
                    f'<figure><div class="pair">{"".join(links)}</div>'
                    f"<figcaption>{caption}</figcaption></figure>"
                )
            if figures:
                groups.append(f"<h3>{group.capitalize()}</h3>" + "".join(figures))
        score_name = SCORE_NAMES.get(self._task or "", "")
        return (
            f"<h2>Gallery</h2><p>Per-image score ({self._task}): {html.escape(score_name)}. "
            f"Each image: prediction (left), ground truth (right).</p>" + "".join(groups)
        )

    def _draw_prediction(self, image: np.ndarray, kept: dict) -> np.ndarray:
        if "sem_seg_labels" in kept:
            return _draw_labels(image, kept["sem_seg_labels"], self._metadata)
        return draw_predictions(image, kept, self._metadata, CONFIDENT_SCORE)

    def _draw_ground_truth(self, image: np.ndarray, record: dict) -> np.ndarray:
        if self._task == "parsing":
            with Image.open(record["parsing_semseg_file_name"]) as labels:
                parts = np.asarray(labels).astype(np.int32)
            parts[parts == 0] = 255  # background left undrawn, as in the prediction
            palette = Metadata(
                stuff_classes=list(self._metadata.parsing_classes),
                stuff_colors=[list(c) for c in self._metadata.parsing_colors],
            )
            return _draw_labels(image, parts, palette)
        if "segments_info" in record:  # Detectron2's Cityscapes panoptic loader has no isthing
            things = set(self._metadata.get("thing_dataset_id_to_contiguous_id", {}).values())
            segments = [
                {"isthing": s["category_id"] in things, **s} for s in record["segments_info"]
            ]
            record = {**record, "segments_info": segments}
        return Visualizer(image, self._metadata).draw_dataset_dict(record).get_image()


def _confident_instances(output: Mapping, score_field: str = "scores") -> dict:
    """The output's instances on the CPU, those the overlay would not draw dropped."""
    instances = output["instances"].to("cpu")
    scores = instances.get(score_field) if instances.has(score_field) else instances.scores
    return {"instances": instances[scores >= CONFIDENT_SCORE]}


def _instance_record_score(record: dict, output: Mapping) -> float | None:
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    instances = output["instances"].to("cpu")
    if not annotations or not (instances.scores >= CONFIDENT_SCORE).any():
        return 0.0 if annotations else None  # instance_score's answer, without the masks
    size = (instances.image_size[0], instances.image_size[1])
    with_masks = bool(annotations) and all("segmentation" in a for a in annotations)
    if not with_masks:
        annotations = [{k: v for k, v in a.items() if k != "segmentation"} for a in annotations]
    gt = annotations_to_instances(annotations, size, mask_format="bitmask")
    use_masks = with_masks and instances.has("pred_masks")
    return instance_score(
        gt.gt_boxes.tensor.numpy(),
        instances.pred_boxes.tensor.numpy(),
        instances.scores.numpy(),
        gt.gt_masks.tensor.numpy() if use_masks else None,
        instances.pred_masks.numpy() if use_masks else None,
    )


def _split_gallery(heaps: list, size: int) -> tuple[list[tuple], list[tuple]]:
    """(best first, worst first) lists of (score, file name, kept outputs) from every
    process's heaps: at most `size` each, no image in both (with fewer than 2 x `size`
    images scored, the better half is "best")."""
    entries = {}
    for best, worst, *_ in heaps:
        for *_, key, score, file_name, kept in (*best, *worst):
            entries[key] = (score, file_name, kept)
    # ties: the later image first, as the best heap keeps it
    ranked = [entries[k] for k in sorted(entries, key=lambda k: (entries[k][0], k), reverse=True)]
    num_best = min(size, math.ceil(len(ranked) / 2))
    return ranked[:num_best], ranked[num_best:][::-1][:size]


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """BGR for OpenCV, shrunk to at most :data:`THUMBNAIL_WIDTH` wide."""
    scale = min(1.0, THUMBNAIL_WIDTH / rgb.shape[1])
    if scale < 1.0:
        size = (THUMBNAIL_WIDTH, max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[..., ::-1])


def _draw_labels(image: np.ndarray, labels: np.ndarray, metadata: Metadata) -> np.ndarray:
    """A label map in the metadata's stuff colours (ids without a class are not drawn)."""
    return Visualizer(image, metadata).draw_sem_seg(torch.as_tensor(labels)).get_image()


def _number(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _cell(metric: str | None, value) -> str:
    """A numeric cell: the exact value in ``data-value`` (sorting, tests), two decimals shown;
    ``data-metric`` names the ``metrics.json`` key where the value is one."""
    name = f' data-metric="{html.escape(metric)}"' if metric else ""
    return f'<td class="num"{name} data-value="{float(value)!r}">{_number(value)}</td>'


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A sortable table; every cell after the first is a (metrics.json key or None, value)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><td>{html.escape(str(row[0]))}</td>"
        + "".join(_cell(metric, value) for metric, value in row[1:])
        + "</tr>"
        for row in rows
    )
    return (
        f'<table class="sortable"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _headline_section(results: Mapping, reference: tuple | None) -> str:
    numbers = reference[2] if reference else {}
    tables = []
    for task, metrics in results.items():
        rows = []
        for metric, value in metrics.items():
            if split_per_class(metric) is None:
                key = f"{task}/{metric}"
                rows.append([metric, (key, value), (None, numbers.get(key, math.nan))])
        if rows:
            tables.append(_table(task, ["metric", "this run", "reference"], rows))
    if reference:
        name, source, _ = reference
        note = f"Reference: <code>{html.escape(name)}</code>, {html.escape(source)}."
    else:
        note = "The README lists no reference numbers for this config."
    if not tables:
        return "<h2>Metrics</h2><p>The evaluators returned no metrics.</p>"
    return f"<h2>Metrics</h2><p>{note}</p>" + "".join(tables)


def pr_curves(precision: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, 101 precisions) of each :data:`_PR_IOUS` curve from COCOeval's (T, R, K, A, M)
    ``precision`` at area "all" and the last maxDets, averaged over the categories with
    ground truth (-1 entries); an empty list when no category has any."""
    at = precision[:, :, :, 0, -1]  # (T, R, K)
    valid = (at > -1).all(axis=(0, 1))
    if not valid.any():
        return []
    curves = []
    for iou_index, label in _PR_IOUS:
        chosen = at[:, :, valid] if iou_index is None else at[iou_index : iou_index + 1, :, valid]
        curves.append((label, chosen.mean(axis=(0, 2))))
    return curves


def _pr_svg(task: str, precision: np.ndarray) -> str:
    """An inline SVG chart of :func:`pr_curves` (recall on x, precision on y)."""
    width, height, margin = 360, 260, 40
    inner_w, inner_h = width - 2 * margin, height - 2 * margin
    parts = [
        f'<svg class="pr" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(task)} precision-recall">',
        f'<text x="{width / 2}" y="16" text-anchor="middle">{html.escape(task)}</text>',
        f'<rect x="{margin}" y="{margin}" width="{inner_w}" height="{inner_h}" fill="none" '
        'stroke="#888"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        x, y = margin + tick * inner_w, margin + (1 - tick) * inner_h
        parts += [
            f'<text x="{x}" y="{height - margin + 14}" text-anchor="middle">{tick:.1f}</text>',
            f'<text x="{margin - 4}" y="{y + 4}" text-anchor="end">{tick:.1f}</text>',
        ]
    parts += [
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">recall</text>',
        f'<text x="10" y="{height / 2}" transform="rotate(-90 10 {height / 2})" '
        'text-anchor="middle">precision</text>',
    ]
    curves = pr_curves(precision)
    recall = np.linspace(0, 1, 101)  # COCO's recThrs
    for index, ((label, values), color) in enumerate(zip(curves, _COLORS)):
        points = " ".join(
            f"{margin + r * inner_w:.1f},{margin + (1 - p) * inner_h:.1f}"
            for r, p in zip(recall, values)
        )
        legend_y = margin + 14 + 14 * index
        parts += [
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>',
            f'<text x="{margin + 6}" y="{legend_y}" fill="{color}" '
            f'data-ap="{100 * float(values.mean())!r}">'
            f"{label} (AP {100 * values.mean():.1f})</text>",
        ]
    if not curves:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
    return "".join(parts) + "</svg>"


def _confusion_table(caption: str, confusion: np.ndarray, names: Sequence[str]) -> str:
    confusion = np.asarray(confusion, np.int64)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = confusion / np.maximum(totals, 1)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for name, counts, row in zip(names, confusion, shares):
        cells = "".join(
            f'<td class="num" title="{count} px" data-value="{share!r}" '
            f'style="background:rgba(31,119,180,{share:.3f})">{100 * share:.1f}</td>'
            for count, share in zip(counts.tolist(), row.tolist())
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="confusion"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr><th>gt \\ pred</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:0 1.5em 1em 0;display:inline-table;vertical-align:top}
caption{font-weight:bold;text-align:left}
td,th{border:1px solid #ddd;padding:2px 6px}td.num{text-align:right}
table.sortable th{cursor:pointer;background:#f3f3f3}
table.confusion td{font-size:.8em}div.scroll{overflow-x:auto}
dl.intro{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dl.intro dt{font-weight:bold}
img.curve{max-width:100%;margin:4px}
figure{display:inline-block;margin:6px;vertical-align:top}
div.pair img{margin-right:2px;border:1px solid #ccc}
figcaption{font-size:.85em}
svg.pr{margin:4px;font-size:11px}
#js-errors{color:#b00}
"""

_SCRIPT = """
window.onerror = function (message, source, line) {
  document.getElementById("js-errors").textContent += message + " (line " + line + ")\\n";
};
function cellKey(cell) {
  if (cell.dataset.value === undefined) return cell.textContent.toLowerCase();
  const number = parseFloat(cell.dataset.value);
  return isNaN(number) ? -Infinity : number;
}
function sortBy(header) {
  const column = Array.prototype.indexOf.call(header.parentNode.children, header);
  const ascending = header.dataset.order !== "asc";
  header.dataset.order = ascending ? "asc" : "desc";
  const body = header.closest("table").tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort(function (a, b) {
    const x = cellKey(a.cells[column]), y = cellKey(b.cells[column]);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
document.querySelectorAll("table.sortable th").forEach(function (header) {
  header.addEventListener("click", function () { sortBy(header); });
});
window.addEventListener("load", function () {
  const images = Array.from(document.images);
  const broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.dataset.images = String(images.length);
  document.body.dataset.brokenImages = broken.map(function (i) {
    return i.getAttribute("src");
  }).join(" ");
  document.body.dataset.loaded = "1";
});
"""


def _page(title: str, intro: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in intro)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><dl class="intro">{facts}</dl>'
        + "".join(sections)
        + f'<pre id="js-errors"></pre><script>{_SCRIPT}</script></body></html>'
    )
