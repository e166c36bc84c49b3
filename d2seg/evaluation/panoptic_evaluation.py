"""Panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019, sec. 4) computed from
the predicted maps in memory, with panopticapi's exact matching rules.

:class:`FastCOCOPanopticEvaluator` is a drop-in for Detectron2's ``COCOPanopticEvaluator``
(same constructor, same result keys). Instead of encoding every prediction as a PNG and running
panopticapi's ``pq_compute`` on the files after inference, each process scores every image as
it arrives in ``process()``: it reads the ground-truth PNG once (on a worker thread, while the
previous image is scored) and counts all (ground truth, prediction) pixel pairs in one pass
(:mod:`d2seg.evaluation.panoptic_counting`). The main process gathers the per-image counts,
sums them and writes the prediction PNGs + json only when an ``output_dir`` is given (they are
what a COCO / Cityscapes submission needs).

hotcoco's ``PanopticEval`` (same TP / FP / FN) reads predictions from PNG files or from
per-segment RLE masks, so using it here would mean encoding every map or every segment first;
measured on 500 images, counting in memory takes less time than writing the PNGs alone and
several times less than hotcoco's RLE path (``benchmarks/eval_speed.py``,
``benchmarks/README.md``).

Matching rules, as panopticapi's ``pq_compute_single_core`` applies them (the tests check every
one against it):

- a ground-truth and a predicted segment of the same category match when IoU > 0.5 (strict;
  paper sec. 4.1, which makes matches unique), where the union leaves out the prediction's
  pixels on VOID (ground-truth id 0) and the ground-truth area is its json ``area``; crowd
  segments (``iscrowd`` 1) never match;
- an unmatched predicted segment is no false positive when more than half of its pixels
  (strict) lie on VOID plus the crowd region of its category (the last crowd segment of that
  category in the image's ``segments_info``; paper sec. 4.1, void and group labels);
- PQ, SQ and RQ average over the categories with at least one TP, FP or FN; a category absent
  from both sides reports 0 and counts in no average (an average over no category is NaN, where
  panopticapi divides by zero).
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_every_n_seconds
from tabulate import tabulate

from d2seg.evaluation.gallery_items import OutputsDrawing
from d2seg.evaluation.panoptic_counting import (
    ID_LIMIT,
    PairCounter,
    encode_panoptic_png,
    make_pair_counter,
)
from d2seg.evaluation.per_image_scores import SCORE_NAMES, panoptic_score
from d2seg.evaluation.report.protocol import ClassTable, ReportSource, ScoreDefinition, ScoredImage
from d2seg.utils.file_io import atomic_json_dump

logger = logging.getLogger(__name__)

_TP, _FP, _FN, _IOU = range(4)  # rows of the per-image statistics


class PreparedPrediction(NamedTuple):
    """A predicted map checked by :func:`prepare_prediction`: what scoring needs."""

    pixels: np.ndarray  # the (H, W) map in the form its PairCounter counts (PairCounter.prepare)
    keys: np.ndarray  # the listed segment ids, in segments_info order
    categories: np.ndarray  # their category columns


def _segment_ids(segments: Sequence[Mapping], where: str) -> np.ndarray:
    ids = np.array([s["id"] for s in segments], dtype=np.int64)
    bad = ids[(ids <= 0) | (ids >= ID_LIMIT)]
    if len(bad):
        raise ValueError(f"{where}: segment ids {bad.tolist()} are outside [1, 2^24) (0 is VOID)")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{where}: segments_info lists a segment id twice: {ids.tolist()}")
    return ids


def _category_columns(
    segments: Sequence[Mapping], category_index: Mapping[int, int], where: str
) -> np.ndarray:
    unknown = {s["category_id"] for s in segments} - set(category_index)
    if unknown:
        raise KeyError(f"{where}: category_id {sorted(unknown)} is not a dataset category")
    return np.array([category_index[s["category_id"]] for s in segments], np.int64)


def prepare_prediction(
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    category_index: Mapping[int, int],
    counter: PairCounter,
    where: str = "image",
) -> PreparedPrediction:
    """Check a predicted (H, W) id map against its ``segments_info`` (``id``,
    ``category_id``) and hand it to `counter` (valid until its next ``prepare``). Raises what
    panopticapi rejects on the prediction side (an id outside [0, 2^24), one listed twice, an
    unknown category; with :class:`NumpyPairCounter` also an id in the map but not in
    ``segments_info``, which the numba counter finds while counting), naming ``where``."""
    smallest, largest = (int(pred_ids.min()), int(pred_ids.max())) if pred_ids.size else (0, 0)
    if smallest < 0 or largest >= ID_LIMIT:
        raise ValueError(
            f"{where}: predicted segment ids must lie in [0, 2^24), got [{smallest}, {largest}]"
        )
    where = f"{where} (prediction)"
    keys = _segment_ids(pred_segments, where)
    categories = _category_columns(pred_segments, category_index, where)
    pixels = counter.prepare(pred_ids, keys, largest, where)
    return PreparedPrediction(pixels, keys, categories)


def image_pq_stats(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    category_index: Mapping[int, int],
    counter: PairCounter,
    where: str = "image",
) -> np.ndarray:
    """(4, C) float64 statistics of one image: TP, FP and FN counts and summed TP IoU per column
    of ``category_index`` (dataset category id -> column).

    ``gt_segments`` need ``id``, ``category_id``, ``iscrowd`` and ``area`` (the json area, as
    panopticapi uses it); ``pred_segments`` need ``id`` and ``category_id``. Raises what
    panopticapi rejects (a predicted id missing from ``segments_info`` or from the map, an
    unknown category, maps of different sizes), naming ``where``.
    """
    prediction = prepare_prediction(pred_ids, pred_segments, category_index, counter, where)
    return prepared_pq_stats(gt_ids, gt_segments, prediction, category_index, counter, where)


def prepared_pq_stats(
    ground_truth: np.ndarray,
    gt_segments: Sequence[Mapping],
    prediction: PreparedPrediction,
    category_index: Mapping[int, int],
    counter: PairCounter,
    where: str = "image",
) -> np.ndarray:
    """:func:`image_pq_stats` of a :func:`prepare_prediction` result, the ground truth as an
    id map or as `counter`'s ``read_ground_truth`` gave it."""
    shape = ground_truth.shape[:2]
    if shape != prediction.pixels.shape:
        raise ValueError(f"{where}: prediction is {prediction.pixels.shape}, ground truth {shape}")
    gt_keys = _segment_ids(gt_segments, f"{where} (ground truth)")
    gt_cat = _category_columns(gt_segments, category_index, f"{where} (ground truth)")
    pred_cat = prediction.categories
    try:
        gt_crowd = np.array([s["iscrowd"] == 1 for s in gt_segments], bool)
        gt_area = np.array([s["area"] for s in gt_segments], np.float64)
    except KeyError as error:
        raise KeyError(f"{where}: a ground-truth segment has no {error}") from None

    counts = counter.count(
        ground_truth, gt_keys, prediction.pixels, prediction.keys, f"{where} (prediction)"
    )
    pred_area = counts[:, 2:].sum(axis=0)
    if not pred_area.all():
        raise KeyError(
            f"{where}: predicted segment ids {prediction.keys[pred_area == 0].tolist()} "
            "are in segments_info but not in the map"
        )
    pred_on_void = counts[1, 2:]
    intersection = counts[2:, 2:]

    candidate = (intersection > 0) & ~gt_crowd[:, None] & (gt_cat[:, None] == pred_cat[None, :])
    union = pred_area[None, :] + gt_area[:, None] - intersection - pred_on_void[None, :]
    iou = np.zeros(intersection.shape)
    np.divide(intersection, union, out=iou, where=candidate)
    gt_row, pred_col = np.nonzero(iou > 0.5)

    stats = np.zeros((4, len(category_index)))
    columns = len(category_index)
    stats[_TP] = np.bincount(gt_cat[gt_row], minlength=columns)
    stats[_IOU] = np.bincount(gt_cat[gt_row], weights=iou[gt_row, pred_col], minlength=columns)
    missed = np.ones(len(gt_segments), bool)
    missed[gt_row] = False
    stats[_FN] = np.bincount(gt_cat[missed & ~gt_crowd], minlength=columns)

    crowd_row = {int(gt_cat[row]): row for row in np.flatnonzero(gt_crowd)}  # the last one wins
    ignored = pred_on_void.astype(np.float64)
    for col, category in enumerate(pred_cat.tolist()):
        if category in crowd_row:
            ignored[col] += intersection[crowd_row[category], col]
    false_positive = ignored / pred_area <= 0.5
    false_positive[pred_col] = False
    stats[_FP] = np.bincount(pred_cat[false_positive], minlength=columns)
    return stats


def pq_from_stats(stats: np.ndarray, categories: Sequence[Mapping]) -> dict:
    """PQ / SQ / RQ in panopticapi's ``pq_compute`` shape from (4, C) summed statistics whose
    columns follow ``categories`` (the ground-truth json's, each with ``isthing``):
    ``{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category id: {"pq",
    "sq", "rq", "tp", "fp", "fn", "iou"}}}``, scores as fractions."""
    per_class = {}
    for category, (tp, fp, fn, iou) in zip(categories, stats.T.tolist()):
        counts = {"tp": int(tp), "fp": int(fp), "fn": int(fn), "iou": iou}
        if tp + fp + fn == 0:
            per_class[category["id"]] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, **counts}
            continue
        denominator = tp + 0.5 * fp + 0.5 * fn  # PQ = sum IoU / (TP + FP/2 + FN/2), eq. (1)
        per_class[category["id"]] = {
            "pq": iou / denominator,
            "sq": iou / tp if tp else 0.0,
            "rq": tp / denominator,
            **counts,
        }
    results: dict = {"per_class": per_class}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        scored = [
            per_class[c["id"]]
            for c in categories
            if (isthing is None or (c["isthing"] == 1) == isthing)
            and per_class[c["id"]]["tp"] + per_class[c["id"]]["fp"] + per_class[c["id"]]["fn"]
        ]
        results[name] = {"n": len(scored)}
        for key in ("pq", "sq", "rq"):
            total = 0.0
            for values in scored:  # summed in category order, as panopticapi sums
                total += values[key]
            results[name][key] = total / len(scored) if scored else float("nan")
    return results


class _ReadImage(NamedTuple):
    """An image whose ground truth was read in one ``process()`` call, scored in the next."""

    entry: dict  # its item of ``_predictions``; scoring adds "stats"
    segments_info: list  # the ground truth's
    prediction: PreparedPrediction
    ground_truth: np.ndarray  # as `counter` read it, in its work arrays
    counter: PairCounter  # the one of the evaluator's two that read and prepared it
    where: str
    gallery: tuple | None  # (index, record, output) when the report's gallery is on


class FastCOCOPanopticEvaluator(COCOPanopticEvaluator, ReportSource):
    """Detectron2's ``COCOPanopticEvaluator`` (same arguments, same ``panoptic_seg`` result
    keys PQ, SQ, RQ and their ``_th`` / ``_st`` variants), computed from the maps in memory.

    Every process scores its images against the ground truth named by the dataset's
    ``panoptic_json`` / ``panoptic_root`` metadata, in a pipeline over two threads: while a
    worker thread reads a ``process()`` call's ground-truth PNG (OpenCV's decoder releases the
    GIL), the calling thread scores the previous image and checks this one's prediction. An
    image's statistics thus appear in ``_predictions`` one call later (``evaluate()`` scores
    the last one). Each call waits for its own reading, so no work is left running between
    calls. Pixels are counted by :mod:`~d2seg.evaluation.panoptic_counting` counters, two of
    them taking turns so that the image being read never shares work arrays with the one being
    scored: ``counting`` "auto" takes numba's where installed, else NumPy's (same numbers).
    ``evaluate()`` gathers the per-image counts on the main process, which logs the
    per-category table (kept with the counts in :attr:`pq_results`, panopticapi's result shape)
    and, with ``output_dir``, writes ``predictions.json`` and the PNGs in ``predictions/``
    beside it, atomically.

    For the report it gives the per-category PQ table and, when asked, each image's PQ, handed
    over when the image is scored (one call late, as above).
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, *, counting: str = "auto"):
        super().__init__(dataset_name, output_dir)
        self._ground_truth: dict | None = None
        self._counters = (make_pair_counter(counting), make_pair_counter(counting))
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="d2seg-panoptic-gt")
        self._read: _ReadImage | None = None
        self.pq_results: dict | None = None

    def reset(self) -> None:
        self._predictions = []
        self._read = None

    def _load_ground_truth(self) -> dict:
        if self._ground_truth is None:
            path = PathManager.get_local_path(self._metadata.panoptic_json)
            with open(path) as f:
                content = json.load(f)
            missing = [c.get("id") for c in content["categories"] if "isthing" not in c]
            if missing:
                raise KeyError(f"{path}: categories {missing} have no 'isthing'")
            self._ground_truth = {
                "json": path,
                "content": content,
                "annotations": {a["image_id"]: a for a in content["annotations"]},
                "category_index": {c["id"]: i for i, c in enumerate(content["categories"])},
            }
        return self._ground_truth

    def _segments_from_labels(self, labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """Detectron2's convention for ``segments_info`` None: label = category * label_divisor
        + instance, -1 VOID; segment id = label + 1 (0 becomes VOID)."""
        ids = labels.astype(np.int64) + 1
        if ids.size and (ids.min() < 0 or ids.max() >= ID_LIMIT):
            raise ValueError(
                f"panoptic labels must lie in [-1, 2^24 - 1), got "
                f"[{ids.min() - 1}, {ids.max() - 1}]"
            )
        present = np.flatnonzero(np.bincount(ids.ravel()))
        thing_ids = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
        divisor = self._metadata.label_divisor
        segments = [
            {
                "id": int(i),
                "category_id": int((i - 1) // divisor),
                "isthing": (i - 1) // divisor in thing_ids,
            }
            for i in present[present > 0]
        ]
        return ids, segments

    def process(self, inputs, outputs) -> None:
        ground_truth = self._load_ground_truth()
        for input_, output in zip(inputs, outputs):
            image_id = input_["image_id"]
            annotation = ground_truth["annotations"].get(image_id)
            if annotation is None:
                raise KeyError(f"image_id {image_id!r} is not in {ground_truth['json']}")
            gt_path = PathManager.get_local_path(
                os.path.join(self._metadata.panoptic_root, annotation["file_name"])
            )
            # the previous image stays in the other counter's work arrays until scored below
            first, second = self._counters
            counter = second if self._read is not None and self._read.counter is first else first
            reading = self._reader.submit(counter.read_ground_truth, gt_path)
            try:  # meanwhile, on this thread: the previous image, then this one's prediction
                self._score_read()
                entry, prediction = self._prepare(image_id, input_, output, counter)
            finally:
                futures.wait([reading])  # nothing of this call runs on after it
            read = _ReadImage(
                entry,
                annotation["segments_info"],
                prediction,
                reading.result(),  # raises here for an unreadable ground truth
                counter,
                f"image {image_id!r}",
                self._gallery_candidate(input_, output),
            )
            self._predictions.append(entry)
            self._read = read

    def _prepare(self, image_id, input_: Mapping, output: Mapping, counter: PairCounter):
        """This image's ``_predictions`` item and its checked prediction."""
        pred_ids, segments_info = output["panoptic_seg"]
        pred_ids = pred_ids.cpu().numpy()
        if segments_info is None:
            pred_ids, segments_info = self._segments_from_labels(pred_ids)
        segments = [self._convert_category_id(dict(s)) for s in segments_info]
        prediction = prepare_prediction(
            pred_ids,
            segments,
            self._ground_truth["category_index"],
            counter,
            where=f"image {image_id!r}",
        )
        entry = {"image_id": image_id}
        if self._output_dir:
            stem = os.path.splitext(os.path.basename(input_["file_name"]))[0]
            entry.update(
                file_name=stem + ".png", segments_info=segments, png=encode_panoptic_png(pred_ids)
            )
        return entry, prediction

    def _score_read(self) -> None:
        """Score the image read in the previous call, if any: its ``stats``."""
        read, self._read = self._read, None
        if read is not None:
            read.entry["stats"] = prepared_pq_stats(
                read.ground_truth,
                read.segments_info,
                read.prediction,
                self._ground_truth["category_index"],
                read.counter,
                where=read.where,
            )
            if read.gallery is not None:
                with self.gallery_work():
                    self._hand_over_score(read.entry["stats"], *read.gallery)

    def _gallery_candidate(self, input_: Mapping, output: Mapping) -> tuple | None:
        """What the gallery needs of the image once it is scored (None: gallery off)."""
        if not self.gallery_enabled:
            return None
        with self.gallery_work():
            return (
                self.next_gallery_index(),
                self.dataset_record(self._metadata.name, input_),
                output,
            )

    def _hand_over_score(self, stats: np.ndarray, index: int, record: dict, output) -> None:
        score = panoptic_score(stats)
        if score is None:
            return

        def drawing() -> OutputsDrawing:  # made only for an image that enters the gallery
            ids, segments_info = output["panoptic_seg"]
            outputs = {"panoptic_seg": (ids.to("cpu"), segments_info)}
            return OutputsDrawing(self._metadata.name, outputs, record)

        self.hand_over(ScoredImage(index, record["file_name"], score, drawing))

    def per_image_score(self) -> ScoreDefinition:
        return ScoreDefinition("panoptic", SCORE_NAMES["panoptic"])

    def report_tables(self) -> list[ClassTable]:
        """PQ / SQ / RQ (x100) and TP / FP / FN of every category of the last evaluation."""
        if not self.pq_results:
            return []
        rows = []
        for category in self._load_ground_truth()["content"]["categories"]:
            values = self.pq_results["per_class"][category["id"]]
            rows.append(
                [category.get("name", str(category["id"]))]
                + [(None, 100 * values[k]) for k in ("pq", "sq", "rq")]
                + [(None, values[k]) for k in ("tp", "fp", "fn")]
            )
        header = ["category", "PQ", "SQ", "RQ", "TP", "FP", "FN"]
        return [ClassTable("panoptic_seg", header, rows)]

    def evaluate(self) -> OrderedDict | None:
        self._score_read()
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None
        if not predictions:
            logger.warning("[FastCOCOPanopticEvaluator] Did not receive valid predictions.")
            return OrderedDict()
        ground_truth = self._load_ground_truth()
        by_image = {p["image_id"]: p for p in predictions}  # a repeated image: the last wins
        unseen = len(set(ground_truth["annotations"]) - set(by_image))
        if unseen:
            logger.warning(
                f"{unseen} images of {ground_truth['json']} got no prediction; PQ is "
                f"over the {len(by_image)} evaluated ones"
            )
        categories = ground_truth["content"]["categories"]
        self.pq_results = pq_from_stats(sum(p["stats"] for p in by_image.values()), categories)
        logger.info(
            f"PQ from the in-memory maps of {len(by_image)} images ({self._counters[0].name})"
        )
        if self._output_dir:
            self._write_predictions(list(by_image.values()), ground_truth["content"])
        _log_tables(self.pq_results, categories)
        res = {}
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for key in ("PQ", "SQ", "RQ"):
                res[key + suffix] = 100 * self.pq_results[group][key.lower()]
        return OrderedDict({"panoptic_seg": res})

    def _write_predictions(self, predictions: list[dict], gt_content: dict) -> None:
        """``predictions.json`` (the ground-truth json with its annotations replaced, as
        Detectron2 writes it) and ``predictions/*.png`` (panopticapi's default folder for that
        json): PNGs go to a temporary folder renamed into place, then the json is replaced,
        so a reader never sees a half-written result."""
        folder = os.path.join(self._output_dir, "predictions")
        staging = tempfile.mkdtemp(prefix=".predictions-", dir=self._output_dir)
        try:
            start = time.perf_counter()
            for i, p in enumerate(predictions, 1):
                with open(os.path.join(staging, p["file_name"]), "wb") as f:
                    f.write(p["png"])
                eta = (time.perf_counter() - start) / i * (len(predictions) - i)
                log_every_n_seconds(
                    logging.INFO,
                    f"wrote {i}/{len(predictions)} prediction PNGs to {folder}, "
                    f"ETA={datetime.timedelta(seconds=int(eta))}",
                    n=5,
                    name=__name__,
                )
            os.chmod(staging, 0o755)
            if os.path.isdir(folder):
                os.rename(folder, staging + ".old")
            os.rename(staging, folder)
            shutil.rmtree(staging + ".old", ignore_errors=True)
            content = dict(gt_content)
            content["annotations"] = [
                {k: p[k] for k in ("image_id", "file_name", "segments_info")} for p in predictions
            ]
            json_path = os.path.join(self._output_dir, "predictions.json")
            atomic_json_dump(content, json_path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info(f"panoptic predictions written to {json_path} and {folder}")


def _log_tables(results: dict, categories: Sequence[Mapping]) -> None:
    """Detectron2's summary table, then PQ / SQ / RQ and the counts of every category."""
    rows = [
        [g] + [100 * results[g][k] for k in ("pq", "sq", "rq")] + [results[g]["n"]]
        for g in ("All", "Things", "Stuff")
    ]
    logger.info(
        "Panoptic Evaluation Results:\n"
        + tabulate(
            rows,
            headers=["", "PQ", "SQ", "RQ", "#categories"],
            tablefmt="pipe",
            floatfmt=".3f",
            stralign="center",
            numalign="center",
        )
    )
    per_class = results["per_class"]
    rows = [
        [c.get("name", c["id"]), "thing" if c["isthing"] == 1 else "stuff"]
        + [100 * per_class[c["id"]][k] for k in ("pq", "sq", "rq")]
        + [per_class[c["id"]][k] for k in ("tp", "fp", "fn")]
        for c in categories
    ]
    logger.info(
        "Per-category panoptic results:\n"
        + tabulate(
            rows,
            headers=["category", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"],
            tablefmt="pipe",
            floatfmt=".3f",
            numalign="left",
        )
    )
