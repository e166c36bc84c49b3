"""COCO box / mask AP: Mask Scoring R-CNN's protocol, and AP of a panoptic dataset's things."""

from __future__ import annotations

import copy
import os

from d2seg.evaluation.coco_backend import FastCOCOEvaluator
from d2seg.utils.file_io import atomic_json_dump


class MaskScoringCOCOEvaluator(FastCOCOEvaluator):
    """Detectron2's COCOEvaluator; when predictions carry `mask_scores` (Mask Scoring R-CNN),
    box AP ranks detections by `scores` and mask AP by `mask_scores` (paper sec. 4), and the
    results are written per task to `coco_bbox_results.json` and `coco_segm_results.json`, each
    with the score its task used. Without `mask_scores` it is exactly Detectron2's evaluator.
    AP comes from the `eval_backend` argument's engine (TEST.EVAL_BACKEND, coco_backend.py)."""

    def process(self, inputs, outputs) -> None:
        first_new = len(self._predictions)
        super().process(inputs, outputs)
        by_image = {p["image_id"]: p for p in self._predictions[first_new:]}
        for inputs_i, outputs_i in zip(inputs, outputs):
            instances = outputs_i.get("instances")
            if instances is None or not instances.has("mask_scores"):
                continue
            results = by_image[inputs_i["image_id"]]["instances"]  # one per instance, in order
            for result, mask_score in zip(results, instances.mask_scores.tolist()):
                result["mask_score"] = mask_score

    def _eval_predictions(self, predictions, img_ids=None) -> None:
        if not any("mask_score" in r for p in predictions for r in p.get("instances", [])):
            super()._eval_predictions(predictions, img_ids)
            return
        tasks = self._tasks or self._tasks_from_predictions(
            [r for p in predictions for r in p["instances"]]
        )
        saved = self._tasks, self._output_dir
        try:
            for task in sorted(set(tasks) & {"bbox", "segm"}):
                ranked = copy.deepcopy(predictions)  # the parent maps category ids in place
                for result in (r for p in ranked for r in p["instances"]):
                    mask_score = result.pop("mask_score")
                    if task == "segm":
                        result["score"] = mask_score
                self._tasks, self._output_dir = (task,), None
                super()._eval_predictions(ranked, img_ids)
                if saved[1]:
                    path = os.path.join(saved[1], f"coco_{task}_results.json")
                    atomic_json_dump([r for p in ranked for r in p["instances"]], path)
        finally:
            self._tasks, self._output_dir = saved


class PanopticThingsCOCOEvaluator(MaskScoringCOCOEvaluator):
    """Box / mask AP of the things of a COCO-format panoptic dataset (with the Mask Scoring
    protocol above). Detectron2's "standard" panoptic metadata lists every category, stuff
    included, in `thing_classes`, while contiguous thing ids index the things only: per-category
    results then name the thing classes, in contiguous-id order."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if class_names and id_map and len(class_names) != len(id_map):
            class_names = [class_names[id_map[i]] for i in sorted(id_map)]
        return super()._derive_coco_results(coco_eval, iou_type, class_names)
