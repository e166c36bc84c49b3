"""Panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019, sec. 4) computed from
the predicted maps in memory, with panopticapi's exact matching rules.

:class:`FastCOCOPanopticEvaluator` is a drop-in for Detectron2's ``COCOPanopticEvaluator``
(same constructor, same result keys). Instead of encoding every prediction as a PNG and running
panopticapi's ``pq_compute`` on the files after inference, each process scores every image as
it arrives in ``process()``: it decodes the ground-truth PNG once and counts all (ground truth,
prediction) pixel pairs with one ``np.bincount`` over combined segment indices. The main process
gathers the per-image counts, sums them and writes the prediction PNGs + json only when an
``output_dir`` is given (they are what a COCO / Cityscapes submission needs).

hotcoco's ``PanopticEval`` (same TP / FP / FN) reads predictions from PNG files or from
per-segment RLE masks, so using it here would mean encoding every map or every segment first;
measured on 500 images, the NumPy path takes less time than writing the PNGs alone and 6x less
than hotcoco's RLE path (``benchmarks/eval_speed.py``, ``benchmarks/README.md``).

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

import cv2
import numpy as np
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_every_n_seconds
from tabulate import tabulate

from d2seg.utils.file_io import atomic_json_dump

logger = logging.getLogger(__name__)

ID_LIMIT = 1 << 24
"""Segment ids are 24-bit: the COCO panoptic PNG stores id = R + 256 G + 256^2 B."""
FLOAT32_EXACT = 1 << 24
"""Pixel counts below this are exact in float32 (OpenCV's histogram counts in float32)."""
_TP, _FP, _FN, _IOU = range(4)  # rows of the per-image statistics


def decode_panoptic_png(path: str, scratch: ScratchArrays | None = None) -> np.ndarray:
    """The (H, W) segment ids of a COCO-format panoptic PNG (panopticapi's ``rgb2id``; an alpha
    channel is ignored, as there): uint32, or intp in ``scratch`` (reused; valid until the
    next call with it)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # the PNG's own channels: no conversion
    if image is None:
        raise FileNotFoundError(f"cannot read the panoptic PNG {path!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f"{path!r} is not an 8-bit RGB(A) panoptic PNG: {image.dtype} {image.shape}"
        )
    code = cv2.COLOR_BGR2RGBA if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    if scratch is None:
        ids = cv2.cvtColor(image, code).view("<u4")[..., 0]  # bytes R, G, B, A: one LE word
        ids &= ID_LIMIT - 1
        return ids
    rgba = cv2.cvtColor(image, code, dst=scratch.get("rgba", (*image.shape[:2], 4), np.uint8))
    ids = scratch.get("gt_ids", image.shape[:2], np.intp)
    return np.bitwise_and(rgba.view("<u4")[..., 0], ID_LIMIT - 1, out=ids)


class ScratchArrays:
    """Work arrays reused from image to image, grown to the largest image seen. In a
    per-image loop, fresh multi-megabyte arrays are mapped from the OS and fault in page by
    page; measured on this project's 2-core VM that cost 9 ms per 640 x 480 image, 4x the
    arithmetic (``benchmarks/eval_speed.py``)."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised `shape` array named `name`: the previous one's memory if it fits."""
        size = int(np.prod(shape))
        flat = self._flat.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self._flat[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)


def encode_panoptic_png(ids: np.ndarray) -> bytes:
    """PNG bytes of a segment-id map (panopticapi's ``id2rgb``; ids must lie in [0, 2^24))."""
    words = np.ascontiguousarray(ids, dtype="<u4").view(np.uint8).reshape(*ids.shape, 4)
    ok, png = cv2.imencode(".png", words[..., 2::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ids.shape} panoptic map as PNG")
    return png.tobytes()


class SegmentIndexer:
    """Maps segment ids to small consecutive indices with one 2^24-entry uint16 lookup table
    (32 MB, written once on first use and cleared after each call): one gather per map instead
    of a sort. Index 0 is any id not listed, 1 is VOID (id 0), ``2 + i`` is ``listed[i]``; all
    multiplied by ``step`` (which must keep them below 2^16). Ids must lie in [0, 2^24).

    With ``slot``, the result is a :class:`ScratchArrays` array of that name, valid until the
    next call with the same slot."""

    def __init__(self) -> None:
        self._table: np.ndarray | None = None
        self.scratch = ScratchArrays()

    def __call__(
        self,
        ids: np.ndarray,
        listed: np.ndarray,
        step: int = 1,
        slot: str | None = None,
        largest: int | None = None,
    ) -> np.ndarray:
        if self._table is None:
            # calloc'd: only the pages of ids actually seen are ever mapped (a few per image)
            self._table = np.zeros(ID_LIMIT, np.uint16)
        if (len(listed) + 1) * step > np.iinfo(np.uint16).max:
            raise ValueError(f"{len(listed)} segments in one image: at most 65533 are supported")
        self._table[0] = step
        self._table[listed] = np.arange(2, len(listed) + 2) * step
        try:
            if slot is None:
                return np.take(self._table, ids)
            if largest is None:
                largest = int(ids.max()) if ids.size else 0
            if ids.size > 0 and largest < 256:  # e.g. Detectron2's 1..N ids
                small = self.scratch.get("ids_uint8", ids.shape, np.uint8)
                np.copyto(small, ids, casting="unsafe")
                out = self.scratch.get(slot, ids.shape, np.uint16)
                return cv2.LUT(small, self._table[:256], dst=out)  # 8-bit lookup: no gather
            if ids.dtype != np.intp:  # np.take would cast into a fresh array
                converted = self.scratch.get("ids", ids.shape, np.intp)
                np.copyto(converted, ids)
                ids = converted
            out = self.scratch.get(slot, ids.shape, np.uint16)
            return np.take(self._table, ids, out=out, mode="clip")  # "raise" would buffer
        finally:
            self._table[listed] = 0
            self._table[0] = 0


def _pair_counts(
    gt_ids, gt_keys, pred_ids, pred_keys, indexer: SegmentIndexer, pred_largest: int
) -> np.ndarray:
    """(G + 2, P + 2) pixel counts of every (ground-truth index, predicted index) pair (indices
    as :class:`SegmentIndexer` numbers them), from one histogram over combined indices."""
    shape = (len(gt_keys) + 2, len(pred_keys) + 2)
    bins = shape[0] * shape[1]
    if bins <= 1 << 16:  # the usual case: combined in uint16, 4x less traffic
        pairs = indexer(gt_ids, gt_keys, step=shape[1], slot="gt_index")
        pairs += indexer(pred_ids, pred_keys, slot="pred_index", largest=pred_largest)
        if 0 < pairs.size < FLOAT32_EXACT and pairs.ndim == 2:
            # OpenCV's uint16 histogram is ~4x faster than np.bincount, which first casts every
            # index to intp; unit-width bins from 0 put integer v in bin v, and float32 counts
            # are exact below 2^24 pixels
            counts = cv2.calcHist([pairs], [0], None, [bins], [0, bins])
            return counts.astype(np.int64).reshape(shape)
    else:
        pairs = indexer(gt_ids, gt_keys).astype(np.intp)
        pairs *= shape[1]
        pairs += indexer(pred_ids, pred_keys)
    return np.bincount(pairs.ravel(), minlength=bins).reshape(shape)


def _segment_ids(segments: Sequence[Mapping], where: str) -> np.ndarray:
    ids = np.array([s["id"] for s in segments], dtype=np.int64)
    bad = ids[(ids <= 0) | (ids >= ID_LIMIT)]
    if len(bad):
        raise ValueError(f"{where}: segment ids {bad.tolist()} are outside [1, 2^24) (0 is VOID)")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{where}: segments_info lists a segment id twice: {ids.tolist()}")
    return ids


def image_pq_stats(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    category_index: Mapping[int, int],
    indexer: SegmentIndexer,
    where: str = "image",
) -> np.ndarray:
    """(4, C) float64 statistics of one image: TP, FP and FN counts and summed TP IoU per column
    of ``category_index`` (dataset category id -> column).

    ``gt_segments`` need ``id``, ``category_id``, ``iscrowd`` and ``area`` (the json area, as
    panopticapi uses it); ``pred_segments`` need ``id`` and ``category_id``. Raises what
    panopticapi rejects (a predicted id missing from ``segments_info`` or from the map, an
    unknown category, maps of different sizes), naming ``where``.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"{where}: prediction is {pred_ids.shape}, ground truth {gt_ids.shape}")
    smallest, largest = (int(pred_ids.min()), int(pred_ids.max())) if pred_ids.size else (0, 0)
    if smallest < 0 or largest >= ID_LIMIT:
        raise ValueError(
            f"{where}: predicted segment ids must lie in [0, 2^24), got [{smallest}, {largest}]"
        )
    gt_keys = _segment_ids(gt_segments, f"{where} (ground truth)")
    pred_keys = _segment_ids(pred_segments, f"{where} (prediction)")
    unknown = {s["category_id"] for s in (*gt_segments, *pred_segments)} - set(category_index)
    if unknown:
        raise KeyError(f"{where}: category_id {sorted(unknown)} is not a dataset category")
    gt_cat = np.array([category_index[s["category_id"]] for s in gt_segments], np.int64)
    pred_cat = np.array([category_index[s["category_id"]] for s in pred_segments], np.int64)
    try:
        gt_crowd = np.array([s["iscrowd"] == 1 for s in gt_segments], bool)
        gt_area = np.array([s["area"] for s in gt_segments], np.float64)
    except KeyError as error:
        raise KeyError(f"{where}: a ground-truth segment has no {error}") from None

    counts = _pair_counts(gt_ids, gt_keys, pred_ids, pred_keys, indexer, largest)
    if counts[:, 0].any():
        unlisted = np.setdiff1d(np.unique(pred_ids), np.append(pred_keys, 0))
        raise KeyError(
            f"{where}: predicted segment ids {unlisted.tolist()} are in the map but "
            "not in segments_info"
        )
    pred_area = counts[:, 2:].sum(axis=0)
    if not pred_area.all():
        raise KeyError(
            f"{where}: predicted segment ids {pred_keys[pred_area == 0].tolist()} "
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


class FastCOCOPanopticEvaluator(COCOPanopticEvaluator):
    """Detectron2's ``COCOPanopticEvaluator`` (same arguments, same ``panoptic_seg`` result
    keys PQ, SQ, RQ and their ``_th`` / ``_st`` variants), computed from the maps in memory.

    Every process scores its images in ``process()`` against the ground truth named by the
    dataset's ``panoptic_json`` / ``panoptic_root`` metadata; ``evaluate()`` gathers the
    per-image counts on the main process, which logs the per-category table (kept with the
    counts in :attr:`pq_results`, panopticapi's result shape) and, with ``output_dir``, writes
    ``predictions.json`` and the PNGs in ``predictions/`` beside it, atomically.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        super().__init__(dataset_name, output_dir)
        self._ground_truth: dict | None = None
        self._indexer = SegmentIndexer()
        self.pq_results: dict | None = None

    def reset(self) -> None:
        self._predictions = []

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
            pred_ids, segments_info = output["panoptic_seg"]
            pred_ids = pred_ids.cpu().numpy()
            if segments_info is None:
                pred_ids, segments_info = self._segments_from_labels(pred_ids)
            segments = [self._convert_category_id(dict(s)) for s in segments_info]
            annotation = ground_truth["annotations"].get(image_id)
            if annotation is None:
                raise KeyError(f"image_id {image_id!r} is not in {ground_truth['json']}")
            gt_path = os.path.join(self._metadata.panoptic_root, annotation["file_name"])
            stats = image_pq_stats(
                decode_panoptic_png(PathManager.get_local_path(gt_path), self._indexer.scratch),
                annotation["segments_info"],
                pred_ids,
                segments,
                ground_truth["category_index"],
                self._indexer,
                where=f"image {image_id!r}",
            )
            prediction = {"image_id": image_id, "stats": stats}
            if self._output_dir:
                stem = os.path.splitext(os.path.basename(input_["file_name"]))[0]
                prediction.update(
                    file_name=stem + ".png",
                    segments_info=segments,
                    png=encode_panoptic_png(pred_ids),
                )
            self._predictions.append(prediction)

    def evaluate(self) -> OrderedDict | None:
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
        logger.info(f"PQ from the in-memory maps of {len(by_image)} images (NumPy)")
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
