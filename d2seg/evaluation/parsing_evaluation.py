"""Human-parsing metrics of Parsing R-CNN (Yang et al., CVPR 2019, sec. 4), computed as the
authors' reference does (soeaver/Parsing-R-CNN, ``utils/data/evaluation/parsing_eval.py``):

- **mIoU**: a global part map per image paints the detections in ascending score order, those
  scoring >= ``semseg_score_thresh`` only (reference ``parsing_png``; 0.3 CIHP, 0.05 MHP-v2), a
  detection's non-background pixels over what is below. One confusion matrix over the dataset
  (ground-truth ids >= the class count are ignored); IoU per class = diagonal / (row + column -
  diagonal), mIoU = their nanmean over all classes, background included, so a class counts
  when the ground truth or the prediction has it. The reference leaves images without any
  detection out (it writes no PNG for them); here they count as all background unless
  ``count_empty_images`` is False.
- **AP^p**: detections scoring >= ``ap_score_thresh`` (reference ``PRCNN.SCORE_THRESH`` 0.001)
  are pooled over the dataset and sorted by score. Each one's overlap with a ground-truth person
  is the nanmean over classes of the per-class IoU between the two image-sized part maps
  (``cal_one_mean_iou``: background included, classes absent from both maps skipped). At
  threshold t, going down the ranking, each detection is matched to the *unclaimed* person of
  its image with the highest overlap (the first one on ties); it is a true positive when that
  overlap is > t (strict), which claims the person, and a false positive otherwise
  (``matching="unclaimed"``, the default). The reference matches a
  detection to its best person whether or not that one is claimed already, so a detection whose
  best person was taken is a false positive even when another person of the image overlaps it
  by more than t (``matching="reference"``, VOC's rule, which the published numbers use). AP is
  VOC's all-point area under the interpolated precision-recall curve; recall counts every
  ground-truth person. AP^p_50 is t = 0.5, AP^p_vol the mean over t = 0.1 ... 0.9.
- **PCP** at t: each true positive scores (number of its person's parts, background excluded,
  whose IoU is > t) / (number of parts the person has); PCP = their sum over all ground-truth
  persons (unmatched ones score 0). PCP_50 is t = 0.5.

Results are x100. Sorting is stable where the reference's is not: equal scores keep detection
order. Unlike the reference, no PNG is re-read per detection: :meth:`ParsingEvaluator.process`
reads an image's ground truth once, keeps every part map as a crop around its non-background
pixels and computes all detection-person IoUs of the image in one pass, touching only where
crops overlap; only a few numbers per detection are gathered across processes.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from PIL import Image
from tabulate import tabulate

from d2seg.evaluation.gallery_items import OutputsDrawing, confident_instances, draw_labels
from d2seg.evaluation.per_image_scores import SCORE_NAMES, confusion_score
from d2seg.evaluation.report.panels import ConfusionPanel
from d2seg.evaluation.report.protocol import Panel, ReportSource, ScoreDefinition, ScoredImage
from d2seg.utils.file_io import atomic_json_dump

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Part-IoU thresholds of AP^p and PCP (reference ``ovthresh_seg``); AP^p_vol averages them."""
MATCHING_RULES = ("unclaimed", "reference")
"""How AP^p assigns a detection to a ground-truth person (see the module docstring)."""


class PartMap(NamedTuple):
    """An image-sized part map stored as `labels` at (`x0`, `y0`); 0 everywhere else."""

    x0: int
    y0: int
    labels: np.ndarray  # (h, w) uint8

    @classmethod
    def tight(cls, labels: np.ndarray, x0: int = 0, y0: int = 0) -> PartMap:
        """The crop of `labels` (placed at x0, y0) around its non-zero pixels."""
        left, top, width, height = cv2.boundingRect(np.ascontiguousarray(labels))
        return cls(x0 + left, y0 + top, labels[top : top + height, left : left + width])


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) pixel counts, ground truth by row, prediction by column; gt >= C is ignored."""
    valid = gt < num_classes
    pairs = gt[valid].astype(np.int64) * num_classes + pred[valid]
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def paint_semantic(
    parts: list[PartMap], scores: np.ndarray, score_thresh: float, image_size: tuple[int, int]
) -> np.ndarray:
    """The image's global part map: detections scoring >= `score_thresh` painted in ascending
    score order (stable), each one's non-zero pixels over what is below."""
    semantic = np.zeros(image_size, np.uint8)
    for index in np.argsort(scores, kind="stable"):
        if scores[index] < score_thresh:
            continue
        x0, y0, labels = parts[index]
        window = semantic[y0 : y0 + labels.shape[0], x0 : x0 + labels.shape[1]]
        np.copyto(window, labels, where=labels > 0)
    return semantic


def class_areas(parts: list[PartMap], num_classes: int, total: int) -> np.ndarray:
    """(N, C) pixels per class of each image-sized map (ids >= C not counted)."""
    areas = np.zeros((len(parts), num_classes), np.int64)
    for index, (_, _, labels) in enumerate(parts):
        counts = np.bincount(labels.ravel(), minlength=num_classes)
        areas[index] = counts[:num_classes]
        areas[index, 0] += total - labels.size
    return areas


def part_iou(
    predictions: list[PartMap],
    persons: list[PartMap],
    image_size: tuple[int, int],
    num_classes: int,
    gt_area: np.ndarray | None = None,
) -> np.ndarray:
    """(R, G, C) per-class IoU of each prediction with each ground-truth person, over the
    pixels where the person's map is not ignored (>= C); NaN where neither map has the class.

    Outside the overlap of a prediction's crop and a person's crop at least one of the two maps
    is 0, so only that overlap is read; everything else follows from the per-class areas
    (`gt_area`: the persons' :func:`class_areas`, when the caller has them already).
    """
    total = image_size[0] * image_size[1]
    if gt_area is None:
        gt_area = class_areas(persons, num_classes, total)  # (G, C), valid pixels only
    gt_ignored = total - gt_area.sum(axis=1)  # (G,)
    pred_area = class_areas(predictions, num_classes, total)  # (R, C)
    shape = (len(predictions), len(persons), num_classes)
    intersection = np.zeros(shape, np.int64)
    pred_on_ignored = np.zeros(shape, np.int64)
    both_parts = np.zeros(shape[:2], np.int64)  # pixels where both maps hold a part
    for r, (px, py, pred) in enumerate(predictions):
        for g, (gx, gy, gt) in enumerate(persons):
            x0, y0 = max(px, gx), max(py, gy)
            x1 = min(px + pred.shape[1], gx + gt.shape[1])
            y1 = min(py + pred.shape[0], gy + gt.shape[0])
            if x1 <= x0 or y1 <= y0:
                continue
            b = pred[y0 - py : y1 - py, x0 - px : x1 - px]
            a = gt[y0 - gy : y1 - gy, x0 - gx : x1 - gx]
            intersection[r, g] = np.bincount(b[(a == b) & (b > 0)], minlength=num_classes)
            pred_on_ignored[r, g] = np.bincount(b[a >= num_classes], minlength=num_classes)
            both_parts[r, g] = np.count_nonzero((a > 0) & (a < num_classes) & (b > 0))
    pred_on_ignored[..., 0] = gt_ignored[None, :] - pred_on_ignored[..., 1:].sum(axis=2)
    pred_valid = pred_area[:, None, :] - pred_on_ignored  # prediction areas on valid pixels
    either_part = pred_valid[..., 1:].sum(axis=2) + gt_area[None, :, 1:].sum(axis=2) - both_parts
    intersection[..., 0] = total - gt_ignored[None, :] - either_part
    union = pred_valid + gt_area[None] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


@dataclass
class ImageStats:
    """What one image contributes to the metrics: a few numbers per detection-person pair."""

    index: int  # position in the dataset, for a deterministic order after gathering
    confusion: np.ndarray | None  # (C, C), None when the image is left out of mIoU
    scores: np.ndarray  # (R,) parsing scores
    overlap: np.ndarray  # (R, G) mean part IoU, -inf where no class counts (no match)
    parts_correct: np.ndarray  # (R, G, T) parts of the person with IoU > t, per threshold t
    person_parts: np.ndarray  # (G,) parts of each person (background excluded)

    @property
    def num_persons(self) -> int:
        return len(self.person_parts)


def image_stats(
    index: int,
    image_size: tuple[int, int],
    predictions: list[PartMap],
    scores: np.ndarray,
    persons: list[PartMap],
    semantic_gt: np.ndarray | None,
    num_classes: int,
    semseg_score_thresh: float,
) -> ImageStats:
    """Overlaps of every detection of one image with every ground-truth person, and the
    image's painted global part map added to a confusion matrix (skipped when `semantic_gt`
    is None)."""
    scores = np.asarray(scores, np.float64)
    confusion = None
    if semantic_gt is not None:
        painted = paint_semantic(predictions, scores, semseg_score_thresh, image_size)
        confusion = confusion_matrix(semantic_gt, painted, num_classes)
    shape = (len(predictions), len(persons))
    if not all(shape):
        return ImageStats(
            index,
            confusion,
            scores,
            overlap=np.full(shape, -np.inf),
            parts_correct=np.zeros((*shape, len(IOU_THRESHOLDS)), np.int64),
            person_parts=np.zeros(len(persons), np.int64),
        )
    gt_area = class_areas(persons, num_classes, image_size[0] * image_size[1])
    iou = part_iou(predictions, persons, image_size, num_classes, gt_area)
    counted = ~np.isnan(iou)
    overlap = np.where(counted, iou, 0).sum(axis=2) / np.maximum(counted.sum(axis=2), 1)
    overlap[~counted.any(axis=2)] = -np.inf  # the reference's nanmean would be NaN: no match
    part_iou_ = np.nan_to_num(iou[..., 1:], nan=-1.0)  # a class absent from both: no part
    thresholds = np.asarray(IOU_THRESHOLDS)
    parts_correct = (part_iou_[..., None, :] > thresholds[:, None]).sum(axis=-1)
    return ImageStats(
        index, confusion, scores, overlap, parts_correct, (gt_area[:, 1:] > 0).sum(axis=1)
    )


def match_image(stats: ImageStats, ranked: np.ndarray, matching: str) -> np.ndarray:
    """(R, T) matched person of each detection at each threshold, -1 for a false positive.

    `ranked`: the image's detections in ranking order (only those are matched). A detection
    takes the person with the highest overlap among the unclaimed ones (``"unclaimed"``) or
    among all (``"reference"``), the first one on ties as the reference's strict ">" does; it
    is a true positive when that overlap is > t and the person is unclaimed.
    """
    if matching not in MATCHING_RULES:
        raise ValueError(f"AP^p matching {matching!r} is not one of {MATCHING_RULES}")
    thresholds = np.asarray(IOU_THRESHOLDS)
    matched = np.full((len(stats.scores), len(thresholds)), -1)
    if stats.num_persons == 0:
        return matched
    claimed = np.zeros((len(thresholds), stats.num_persons), bool)
    columns = np.arange(len(thresholds))
    for r in ranked:
        row = np.broadcast_to(stats.overlap[r], claimed.shape)
        if matching == "unclaimed":
            row = np.where(claimed, -np.inf, row)
        best = np.argmax(row, axis=1)
        hit = (row[columns, best] > thresholds) & ~claimed[columns, best]
        claimed[columns[hit], best[hit]] = True
        matched[r, hit] = best[hit]
    return matched


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC's all-point AP: area under the precision envelope (precision made non-increasing
    from the right), with sentinels (0, 0) and (1, 0)."""
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def ap_and_pcp(
    stats: list[ImageStats], score_thresh: float, matching: str = "unclaimed"
) -> tuple[np.ndarray, np.ndarray]:
    """AP^p and PCP at every threshold of :data:`IOU_THRESHOLDS` (fractions, not x100)."""
    num_persons = sum(s.num_persons for s in stats)
    if num_persons == 0:
        logger.warning("no ground-truth person: AP^p and PCP are undefined")
        return np.full(len(IOU_THRESHOLDS), np.nan), np.full(len(IOU_THRESHOLDS), np.nan)
    stats = sorted(stats, key=lambda s: s.index)
    scores = np.concatenate([s.scores for s in stats])
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_thresh]
    # Claims stay within an image, and a stable sort keeps each image's own ranking, so every
    # image is matched on its own, in the order its detections take in the global ranking.
    starts = np.cumsum([0] + [len(s.scores) for s in stats])
    image_of = np.searchsorted(starts, order, side="right") - 1
    by_image = order[np.argsort(image_of, kind="stable")]  # ranked detections, image by image
    ranked = np.split(by_image, np.cumsum(np.bincount(image_of, minlength=len(stats)))[:-1])
    matched, correct_ratio = [], []
    for i, image in enumerate(stats):
        image_matched = match_image(image, ranked[i] - starts[i], matching)
        ratio = np.zeros(image_matched.shape)
        if image.num_persons:
            person = np.maximum(image_matched, 0)
            correct = np.take_along_axis(image.parts_correct, person[:, None, :], axis=1)[:, 0]
            parts = image.person_parts[person]
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where((image_matched >= 0) & (parts > 0), correct / parts, 0.0)
        matched.append(image_matched)
        correct_ratio.append(ratio)
    true_positive = (np.concatenate(matched) >= 0)[order]  # (N, T) in ranking order
    pcps = np.concatenate(correct_ratio)[order].sum(axis=0) / num_persons
    aps = []
    for t_index in range(len(IOU_THRESHOLDS)):
        tp = np.cumsum(true_positive[:, t_index])
        fp = np.cumsum(~true_positive[:, t_index])
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(voc_ap(tp / num_persons, precision))
    return np.asarray(aps), pcps


def semantic_metrics(confusion: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class IoU (NaN where neither side has the class), mIoU, pixel and mean accuracy."""
    diagonal = np.diag(confusion).astype(np.float64)
    gt, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = diagonal / (gt + pred - diagonal)
        accuracy = diagonal / gt
        pixel_accuracy = diagonal.sum() / confusion.sum()
    return {
        "iou": iou,
        "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pACC": float(pixel_accuracy),
        "mACC": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
    }


class _GroundTruth(NamedTuple):
    index: int
    image_size: tuple[int, int]
    semseg_file: str
    person_files: tuple[str, ...]


def _read_labels(path: str, image_size: tuple[int, int], image_id) -> np.ndarray:
    try:
        with Image.open(path) as image:
            labels = np.asarray(image)
    except OSError as error:
        raise OSError(
            f"cannot read ground truth {path!r} of image {image_id!r}: {error}"
        ) from error
    if labels.shape != image_size:
        raise ValueError(
            f"ground truth {path!r} is {labels.shape}, image {image_id!r} is {image_size}"
        )
    return labels


class PartsDrawing(OutputsDrawing):
    """The report gallery's drawing of a parsing image: the confident detections' part maps
    beside the record's ground-truth part map (background left undrawn on both sides)."""

    def draw_ground_truth(self, image: np.ndarray) -> np.ndarray:
        metadata = MetadataCatalog.get(self.dataset_name)
        with Image.open(self.record["parsing_semseg_file_name"]) as labels:
            parts = np.asarray(labels).astype(np.int32)
        parts[parts == 0] = 255  # background left undrawn, as in the prediction
        palette = Metadata(
            stuff_classes=list(metadata.parsing_classes),
            stuff_colors=[list(c) for c in metadata.parsing_colors],
        )
        return draw_labels(image, parts, palette)


class ParsingEvaluator(DatasetEvaluator, ReportSource):
    """mIoU, AP^p (50, vol, per threshold), PCP_50 and per-class IoU of ``pred_parsing``.

    Reads the ground truth named by the dataset's records (``parsing_semseg_file_name`` and
    each person's ``parsing_file_name``) and the outputs' ``instances.pred_parsing`` (pasted
    with ``label_crops``) and ``instances.parsing_scores``. See the module docstring for the
    exact definitions; person-box AP comes from Detectron2's COCO evaluator beside this one.
    Gives the report the part confusion matrix and, when asked, each image's part mIoU.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        semseg_score_thresh: float = 0.3,
        ap_score_thresh: float = 0.001,
        count_empty_images: bool = True,
        matching: str = "unclaimed",
        distributed: bool = True,
        output_dir: str | None = None,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``parsing_classes``.
            semseg_score_thresh: detections painted into the mIoU part map score >= this.
            ap_score_thresh: detections ranked for AP^p / PCP score >= this.
            count_empty_images: count images without detections in mIoU (as all background);
                False reproduces the reference, which leaves them out.
            matching: "unclaimed" (a detection takes the best person not yet claimed) or
                "reference" (its best person, claimed or not; the authors' code).
            distributed: gather results from every process and evaluate in the main one.
            output_dir: where ``parsing_results.json`` is written (nothing when None).
        """
        metadata = MetadataCatalog.get(dataset_name)
        if not metadata.get("parsing_classes"):
            raise KeyError(f"dataset {dataset_name!r} has no 'parsing_classes' metadata")
        self._class_names = list(metadata.parsing_classes)
        self._semseg_score_thresh = semseg_score_thresh
        self._ap_score_thresh = ap_score_thresh
        self._count_empty_images = count_empty_images
        if matching not in MATCHING_RULES:
            raise ValueError(
                f"TEST.PARSING.MATCHING: {matching!r} is not one of {list(MATCHING_RULES)}"
            )
        self._matching = matching
        self._distributed = distributed
        self._output_dir = output_dir
        self._ground_truth = {
            record["image_id"]: _GroundTruth(
                index,
                (record["height"], record["width"]),
                record["parsing_semseg_file_name"],
                tuple(a["parsing_file_name"] for a in record["annotations"]),
            )
            for index, record in enumerate(DatasetCatalog.get(dataset_name))
        }
        self._dataset_name = dataset_name
        self.confusion: np.ndarray | None = None  # of the last summarize()
        self.reset()

    def reset(self) -> None:
        self._stats: list[ImageStats] = []

    def process(self, inputs, outputs) -> None:
        num_classes = len(self._class_names)
        for input_, output in zip(inputs, outputs):
            image_id = input_["image_id"]
            if image_id not in self._ground_truth:
                raise KeyError(f"image {image_id!r} is not in dataset {self._dataset_name!r}")
            gt = self._ground_truth[image_id]
            instances = output["instances"].to("cpu")
            for field in ("pred_parsing", "parsing_scores", "pred_boxes"):
                if not instances.has(field):
                    raise KeyError(f"the model's instances have no {field!r} (image {image_id!r})")
            if tuple(instances.image_size) != gt.image_size:
                raise ValueError(
                    f"predictions for image {image_id!r} are {tuple(instances.image_size)}, "
                    f"its ground truth is {gt.image_size}"
                )
            crops = instances.pred_parsing.label_crops(instances.pred_boxes.tensor, gt.image_size)
            predictions = [PartMap.tight(c.labels.numpy(), c.x0, c.y0) for c in crops]
            largest = max((int(p.labels.max()) for p in predictions if p.labels.size), default=0)
            if largest >= num_classes:
                raise ValueError(
                    f"image {image_id!r}: part id {largest} predicted, but {self._dataset_name!r} "
                    f"has {num_classes} parsing classes"
                )
            persons = [
                PartMap.tight(_read_labels(path, gt.image_size, image_id))
                for path in gt.person_files
            ]
            semantic_gt = None
            if len(instances) or self._count_empty_images:
                semantic_gt = _read_labels(gt.semseg_file, gt.image_size, image_id)
            stats = image_stats(
                gt.index,
                gt.image_size,
                predictions,
                instances.parsing_scores.numpy(),
                persons,
                semantic_gt,
                num_classes,
                self._semseg_score_thresh,
            )
            self._stats.append(stats)
            if self.gallery_enabled:
                with self.gallery_work():
                    self._score_for_gallery(input_, output, stats)

    def _score_for_gallery(self, input_, output, stats: ImageStats) -> None:
        index = self.next_gallery_index()
        record = self.dataset_record(self._dataset_name, input_)
        if stats.confusion is None:
            return
        score = confusion_score(stats.confusion)
        if score is None:
            return

        def drawing() -> PartsDrawing:  # made only for an image that enters the gallery
            outputs = confident_instances(output, "parsing_scores")
            return PartsDrawing(self._dataset_name, outputs, record)

        self.hand_over(ScoredImage(index, record["file_name"], score, drawing))

    def per_image_score(self) -> ScoreDefinition:
        return ScoreDefinition("parsing", SCORE_NAMES["parsing"])

    def report_panels(self) -> list[Panel]:
        if self.confusion is None:
            return []
        return [ConfusionPanel("parsing", self.confusion, self._class_names)]

    def evaluate(self):
        stats = self._stats
        if self._distributed:
            comm.synchronize()
            stats = [s for part in comm.gather(stats, dst=0) for s in part]
            if not comm.is_main_process():
                return {}
        if not stats:
            logger.warning(f"{self._dataset_name}: no predictions to evaluate")
            return {}
        results = self.summarize(stats)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            atomic_json_dump(
                results, os.path.join(self._output_dir, "parsing_results.json"), indent=1
            )
        return OrderedDict(parsing=results)

    def summarize(self, stats: list[ImageStats]) -> dict[str, float]:
        """The metrics (x100) of gathered per-image stats."""
        num_classes = len(self._class_names)
        confusion = sum(
            (s.confusion for s in stats if s.confusion is not None),
            np.zeros((num_classes, num_classes), np.int64),
        )
        self.confusion = confusion  # ground truth by row
        semantic = semantic_metrics(confusion)
        aps, pcps = ap_and_pcp(stats, self._ap_score_thresh, self._matching)
        fifty = IOU_THRESHOLDS.index(0.5)
        results = {
            "mIoU": 100 * semantic["mIoU"],
            "APp50": 100 * aps[fifty],
            "APpvol": 100 * float(np.mean(aps)),
            "PCP50": 100 * pcps[fifty],
            "pACC": 100 * semantic["pACC"],
            "mACC": 100 * semantic["mACC"],
        }
        for threshold, ap in zip(IOU_THRESHOLDS, aps):
            results[f"APp{round(threshold * 100)}"] = 100 * ap
        for name, iou in zip(self._class_names, semantic["iou"]):
            results[f"IoU-{name}"] = 100 * iou
        table = [
            (name, f"{100 * iou:.2f}") for name, iou in zip(self._class_names, semantic["iou"])
        ]
        logger.info(f"{self._dataset_name}: part IoU\n" + tabulate(table, ["part", "IoU"]))
        return {key: float(value) for key, value in results.items()}
