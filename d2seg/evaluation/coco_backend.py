"""COCO box / mask AP on hotcoco (a Rust COCOeval with pycocotools' results) where installed.

:class:`FastCOCOEvaluator` is Detectron2's ``COCOEvaluator`` with one more keyword argument,
``eval_backend`` (config key ``TEST.EVAL_BACKEND``), chosen the way Detectron2 chooses its C++
``COCOeval_opt`` with ``use_fast_impl``:

- ``"auto"`` (default): hotcoco where ``import hotcoco`` works (``pip install
  'd2seg[fast-eval]'``), otherwise Detectron2's own path;
- ``"hotcoco"``: hotcoco, an error naming the key where it is not installed;
- ``"pycocotools"``: Detectron2's path unchanged (its ``COCOeval_opt`` where built and
  ``use_fast_impl`` is on, else pycocotools' ``COCOeval``).

Detectron2 keeps gathering the predictions, converting category ids, writing the result files
and deriving the result keys and the per-category table; only the step that runs COCOeval
(``detectron2.evaluation.coco_evaluation._evaluate_predictions_on_coco``) is swapped for the
duration of ``_eval_predictions``. Keypoints and a non-increasing ``maxDets`` (a
``max_dets_per_image`` below 10), where hotcoco's arrays differ from pycocotools', stay on
Detectron2's path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence

import detectron2.evaluation.coco_evaluation as detectron2_coco
import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager

from d2seg.evaluation.gallery_items import instance_gallery_item
from d2seg.evaluation.per_image_scores import SCORE_NAMES
from d2seg.evaluation.report.panels import PrecisionRecallPanel
from d2seg.evaluation.report.protocol import Panel, ReportSource, ScoreDefinition
from d2seg.utils.file_io import staged_output_dir

logger = logging.getLogger(__name__)

EVAL_BACKENDS = ("auto", "hotcoco", "pycocotools")
_HOTCOCO_TASKS = ("bbox", "segm")
_COCO_MAX_DETS = [1, 10, 100]  # pycocotools' Params.maxDets default


def resolve_eval_backend(name: str) -> str:
    """``"hotcoco"`` or ``"pycocotools"`` for a ``TEST.EVAL_BACKEND`` value."""
    if name not in EVAL_BACKENDS:
        raise ValueError(f"TEST.EVAL_BACKEND is {name!r}; expected one of {EVAL_BACKENDS}")
    installed = importlib.util.find_spec("hotcoco") is not None
    if name == "hotcoco" and not installed:
        raise ImportError(
            "TEST.EVAL_BACKEND is 'hotcoco' but hotcoco is not installed: "
            "pip install 'd2seg[fast-eval]' (or set TEST.EVAL_BACKEND auto / pycocotools)"
        )
    if name == "auto":
        return "hotcoco" if installed else "pycocotools"
    return name


def evaluate_on_hotcoco(
    coco_gt,
    coco_results: list[dict],
    iou_type: str,
    img_ids: Sequence | None = None,
    max_dets_per_image: Sequence[int] | None = None,
):
    """hotcoco's COCOeval run as Detectron2's ``_evaluate_predictions_on_coco`` runs
    pycocotools': mask AP without the boxes, so that areas (small / medium / large) are mask
    areas. ``coco_gt`` is a ``hotcoco.COCO``; returns the evaluated, summarized COCOeval."""
    import hotcoco

    if iou_type == "segm":
        coco_results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    coco_eval = hotcoco.COCOeval(coco_gt, coco_gt.load_res(coco_results), iou_type)
    coco_eval.params.maxDets = list(max_dets_per_image or _COCO_MAX_DETS)  # copies: assign
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    with warnings.catch_warnings():  # a custom maxDets is Detectron2's max_dets_per_image
        warnings.filterwarnings("ignore", message="hotcoco: max_dets differ")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@contextlib.contextmanager
def hotcoco_in_detectron2(load_gt: Callable[[], object]) -> Iterator[None]:
    """Inside, Detectron2's COCOEvaluator computes bbox / segm AP with hotcoco against the
    ``hotcoco.COCO`` that ``load_gt()`` returns; everything else stays Detectron2's."""
    original = detectron2_coco._evaluate_predictions_on_coco

    def evaluate(
        coco_gt,
        coco_results,
        iou_type,
        kpt_oks_sigmas=None,
        cocoeval_fn=None,
        img_ids=None,
        max_dets_per_image=None,
    ):
        max_dets = list(max_dets_per_image or _COCO_MAX_DETS)
        if iou_type in _HOTCOCO_TASKS and all(a < b for a, b in zip(max_dets, max_dets[1:])):
            import hotcoco

            logger.info(f"COCO {iou_type} AP with hotcoco {hotcoco.__version__}")
            return evaluate_on_hotcoco(load_gt(), coco_results, iou_type, img_ids, max_dets)
        logger.info(f"COCO {iou_type} AP (maxDets {max_dets}) with Detectron2's COCO API")
        return original(
            coco_gt,
            coco_results,
            iou_type,
            kpt_oks_sigmas=kpt_oks_sigmas,
            cocoeval_fn=cocoeval_fn,
            img_ids=img_ids,
            max_dets_per_image=max_dets_per_image,
        )

    detectron2_coco._evaluate_predictions_on_coco = evaluate
    try:
        yield
    finally:
        detectron2_coco._evaluate_predictions_on_coco = original


class FastCOCOEvaluator(COCOEvaluator, ReportSource):
    """Detectron2's ``COCOEvaluator`` whose AP comes from ``eval_backend`` (module docstring);
    every other argument and every result key is Detectron2's. Gives the report its
    precision-recall curves and, when asked, each image's instance score."""

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        eval_backend: str = "auto",
        **kwargs,
    ):
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self.precisions: dict[str, np.ndarray] = {}
        """COCOeval's ``eval["precision"]`` of each task of the last evaluation, (IoU
        thresholds, recall points, categories, areas, maxDets)."""
        self._eval_backend = resolve_eval_backend(eval_backend)
        self._hotcoco_api = None
        if self._eval_backend == "hotcoco":
            import hotcoco

            engine = f"hotcoco {hotcoco.__version__}"
        else:
            engine = "Detectron2's " + ("COCOeval_opt" if self._use_fast_impl else "pycocotools")
        self._logger.info(
            f"COCO AP of {dataset_name}: {engine} (TEST.EVAL_BACKEND {eval_backend!r})"
        )

    def reset(self) -> None:
        super().reset()
        self.precisions = {}

    def process(self, inputs, outputs) -> None:
        super().process(inputs, outputs)
        self.score_images(self._metadata.name, inputs, outputs, instance_gallery_item)

    def per_image_score(self) -> ScoreDefinition:
        return ScoreDefinition("instance", SCORE_NAMES["instance"])

    def report_panels(self) -> list[Panel]:
        """Precision-recall curves of each task (area "all", the largest maxDets, averaged
        over the categories with ground truth, as COCO AP averages)."""
        return [PrecisionRecallPanel(task, p) for task, p in sorted(self.precisions.items())]

    def evaluate(self, img_ids=None):
        """Detectron2's, with its result files (``instances_predictions.pth``,
        ``coco_instances_results.json``) written atomically."""
        with staged_output_dir(self):
            return super().evaluate(img_ids)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        if coco_eval is not None:
            self.precisions[iou_type] = np.asarray(coco_eval.eval["precision"])
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if not self._coco_api.getAnnIds():
            # COCOeval leaves AP undefined (-1, nan here) without ground truth; an empty
            # annotation list is a valid dataset, on which nothing is found: 0
            self._logger.warning(
                f"{self._metadata.name} has no ground-truth annotation: {iou_type} AP is 0"
            )
            results = {metric: 0.0 for metric in results}
        return results

    def _load_hotcoco_gt(self):
        if self._hotcoco_api is None:
            import hotcoco

            self._hotcoco_api = hotcoco.COCO(PathManager.get_local_path(self._metadata.json_file))
        return self._hotcoco_api

    def _eval_predictions(self, predictions, img_ids=None) -> None:
        if self._eval_backend != "hotcoco":
            super()._eval_predictions(predictions, img_ids)
            return
        with hotcoco_in_detectron2(self._load_hotcoco_gt):
            super()._eval_predictions(predictions, img_ids)
