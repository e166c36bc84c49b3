"""Cityscapes instance-AP and semantic-mIoU evaluators on the public `cityscapesscripts` package.

Each process keeps its predictions compressed in memory (RLE masks, PNG-encoded label maps);
the main process gathers them, writes them in the layout the official scripts read, and runs
`evalInstanceLevelSemanticLabeling` / `evalPixelLevelSemanticLabeling` on them.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import tempfile
import types
from collections import OrderedDict

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from d2seg.data.datasets.cityscapes import train_id_to_label_id
from d2seg.evaluation.gallery_items import instance_gallery_item, semantic_gallery_item
from d2seg.evaluation.per_image_scores import SCORE_NAMES
from d2seg.evaluation.report.protocol import ReportSource, ScoreDefinition
from d2seg.utils.file_io import atomic_imwrite, atomic_open

_IMAGE_SUFFIX = "_leftImg8bit.png"


class _LegacyNumpy(types.ModuleType):
    """numpy as cityscapesscripts 2.3 expects it. Newer numpy removed `np.in1d` (2.4) and made
    `np.count_nonzero` over a whole array return a numpy scalar (2.3), which the script's json
    writer cannot serialise. Both are restored exactly: the callers reshape `in1d`'s flat result,
    and a whole-array count is an integer either way."""

    def __init__(self):
        super().__init__("numpy")

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def in1d(values, test_values, invert: bool = False) -> np.ndarray:
        return np.isin(np.ravel(values), test_values, invert=invert)

    @staticmethod
    def count_nonzero(values, axis=None, **kwargs):
        count = np.count_nonzero(values, axis=axis, **kwargs)
        return int(count) if axis is None else count


def _numpy_compatible(official_module: types.ModuleType) -> types.ModuleType:
    """Let one cityscapesscripts module see :class:`_LegacyNumpy` instead of numpy."""
    official_module.np = _LegacyNumpy()
    return official_module


@contextlib.contextmanager
def _official_script_context(workdir: str):
    """Run a cityscapesscripts evaluation inside `workdir` (it writes files to the current
    directory) and turn its `sys.exit` on bad input into an exception."""
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        yield
    except SystemExit as error:
        raise RuntimeError(
            f"cityscapesscripts evaluation failed (exit {error.code}); "
            "see the message printed above"
        ) from error
    finally:
        os.chdir(previous)


def _quiet_official_args(args, prediction_dir: str):
    """Point the official script's module-level `args` at our predictions; no files, no colour."""
    args.predictionPath = prediction_dir
    args.predictionWalk = None
    args.JSONOutput = False
    args.colorized = False
    args.quiet = True
    return args


def _image_key(input_dict: dict) -> tuple[str, str]:
    """(city, stem) of a Cityscapes image record, e.g. ("frankfurt", "frankfurt_000000_000294")."""
    file_name = input_dict["file_name"]
    return os.path.basename(os.path.dirname(file_name)), os.path.basename(file_name)[
        : -len(_IMAGE_SUFFIX)
    ]


class _CityscapesEvaluator(DatasetEvaluator, ReportSource):
    """Collects per-image predictions on every process and evaluates them on the main one with
    the official script `OFFICIAL_MODULE`, against each image's `*_{GT_SUFFIX}` file. When the
    report asks, each image is scored for its gallery by `GALLERY_ITEM` (the `GALLERY_TASK`
    score of :mod:`d2seg.evaluation.per_image_scores`)."""

    OFFICIAL_MODULE = ""
    GT_SUFFIX = ""
    GALLERY_TASK = ""
    GALLERY_ITEM = staticmethod(instance_gallery_item)

    def __init__(self, dataset_name: str):
        self._metadata = MetadataCatalog.get(dataset_name)
        self._predictions: list = []

    def reset(self) -> None:
        self._predictions = []

    def per_image_score(self) -> ScoreDefinition:
        return ScoreDefinition(self.GALLERY_TASK, SCORE_NAMES[self.GALLERY_TASK])

    def _score_for_gallery(self, inputs, outputs) -> None:
        self.score_images(self._metadata.name, inputs, outputs, self.GALLERY_ITEM)

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
        if not comm.is_main_process():
            return None
        if not predictions:
            logging.getLogger(__name__).warning(
                "%s: the model gave no output to evaluate", type(self).__name__
            )
            return OrderedDict()
        with tempfile.TemporaryDirectory(prefix="d2seg_cityscapes_eval_") as workdir:
            workdir = os.path.abspath(workdir)
            official = _numpy_compatible(importlib.import_module(self.OFFICIAL_MODULE))
            prediction_dir = os.path.join(workdir, "pred")
            os.makedirs(prediction_dir)
            gt_files = []
            for (city, stem), prediction in predictions:
                gt_files.append(
                    os.path.join(self._metadata.gt_dir, city, f"{stem}_{self.GT_SUFFIX}")
                )
                self._write_prediction(prediction_dir, stem, prediction)
            args = _quiet_official_args(official.args, prediction_dir)
            with _official_script_context(workdir):
                return self._run_official(official, args, gt_files, workdir)

    def _write_prediction(self, prediction_dir: str, stem: str, prediction) -> None:
        raise NotImplementedError

    def _run_official(self, official, args, gt_files: list[str], workdir: str) -> OrderedDict:
        raise NotImplementedError


class CityscapesInstanceEvaluator(_CityscapesEvaluator):
    """Instance AP / AP50 with the official Cityscapes instance-level evaluation. Each mask is
    listed with its `mask_scores` where the model predicts them (Mask Scoring R-CNN, the protocol
    of its COCO evaluation), else with its `scores`."""

    OFFICIAL_MODULE = "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling"
    GT_SUFFIX = "gtFine_instanceIds.png"
    GALLERY_TASK = "instance"

    def __init__(self, dataset_name: str):
        super().__init__(dataset_name)
        # contiguous class -> Cityscapes label id, whichever contiguous ids the dataset uses
        # (0..7 for the instance splits, train ids 11..18 for the panoptic ones)
        self._label_ids = {
            v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()
        }

    def process(self, inputs, outputs) -> None:
        label_ids = self._label_ids
        for input_dict, output in zip(inputs, outputs):
            if "instances" not in output:  # a panoptic model that predicts no instances
                continue
            instances = output["instances"].to("cpu")
            masks = instances.pred_masks.numpy().astype(np.uint8)
            scores = instances.get("mask_scores" if instances.has("mask_scores") else "scores")
            found = [
                (label_ids[int(c)], float(s), mask_util.encode(np.asfortranarray(m)))
                for c, s, m in zip(instances.pred_classes, scores, masks)
            ]
            self._predictions.append((_image_key(input_dict), found))
        self._score_for_gallery(inputs, outputs)

    def _write_prediction(self, prediction_dir: str, stem: str, found: list) -> None:
        """One PNG per instance, listed with its label id and score in `<stem>_pred.txt`."""
        with atomic_open(os.path.join(prediction_dir, f"{stem}_pred.txt"), "w") as listing:
            for index, (label_id, score, rle) in enumerate(found):
                mask_name = f"{stem}_{index}_{label_id}.png"
                atomic_imwrite(os.path.join(prediction_dir, mask_name), mask_util.decode(rle) * 255)
                listing.write(f"{mask_name} {label_id} {score}\n")

    def _run_official(self, official, args, gt_files: list[str], workdir: str) -> OrderedDict:
        args.gtInstancesFile = os.path.join(workdir, "gtInstances.json")
        prediction_files = [official.getPrediction(gt, args) for gt in gt_files]
        averages = official.evaluateImgLists(prediction_files, gt_files, args)["averages"]
        return OrderedDict(segm={"AP": averages["allAp"] * 100, "AP50": averages["allAp50%"] * 100})


class CityscapesSemSegEvaluator(_CityscapesEvaluator):
    """mIoU (and instance-weighted iIoU) with the official pixel-level evaluation."""

    OFFICIAL_MODULE = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"
    GT_SUFFIX = "gtFine_labelIds.png"
    GALLERY_TASK = "semantic"
    GALLERY_ITEM = staticmethod(semantic_gallery_item)

    def __init__(self, dataset_name: str):
        super().__init__(dataset_name)
        self._to_label_id = train_id_to_label_id()

    def process(self, inputs, outputs) -> None:
        for input_dict, output in zip(inputs, outputs):
            train_ids = output["sem_seg"].argmax(dim=0).to("cpu").numpy().astype(np.uint8)
            png = cv2.imencode(".png", self._to_label_id[train_ids])[1].tobytes()
            self._predictions.append((_image_key(input_dict), png))
        self._score_for_gallery(inputs, outputs)

    def _write_prediction(self, prediction_dir: str, stem: str, png: bytes) -> None:
        with atomic_open(os.path.join(prediction_dir, f"{stem}_pred.png"), "wb") as f:
            f.write(png)

    def _run_official(self, official, args, gt_files: list[str], workdir: str) -> OrderedDict:
        prediction_files = [official.getPrediction(args, gt) for gt in gt_files]
        results = official.evaluateImgLists(prediction_files, gt_files, args)
        return OrderedDict(
            sem_seg={
                "IoU": 100.0 * results["averageScoreClasses"],
                "iIoU": 100.0 * results["averageScoreInstClasses"],
                "IoU_sup": 100.0 * results["averageScoreCategories"],
                "iIoU_sup": 100.0 * results["averageScoreInstCategories"],
            }
        )
