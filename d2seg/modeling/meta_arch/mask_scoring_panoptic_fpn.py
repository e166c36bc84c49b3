"""Panoptic FPN whose instance-vs-semantic merge ranks instances by their mask quality."""

from __future__ import annotations

from detectron2.modeling import META_ARCH_REGISTRY, PanopticFPN
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import Instances


def _ranked_by_mask_scores(instances: Instances) -> Instances:
    """A view of `instances` whose `scores` are the mask scores (when the model predicts them)."""
    if not instances.has("mask_scores"):
        return instances
    ranked = Instances(instances.image_size, **instances.get_fields())
    ranked.scores = instances.mask_scores
    return ranked


@META_ARCH_REGISTRY.register()
class MaskScoringPanopticFPN(PanopticFPN):
    """PanopticFPN with MaskScoringROIHeads: the panoptic merge orders (and thresholds, with
    PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH) instances by `mask_scores` rather than
    classification scores; the `instances` output keeps both."""

    def inference(self, batched_inputs, do_postprocess: bool = True):
        detector_results, sem_seg_results = super().inference(batched_inputs, False)
        if not do_postprocess:
            return detector_results, sem_seg_results
        image_sizes = [x.image_size for x in detector_results]
        processed = []
        for sem_seg, detections, inputs, image_size in zip(
            sem_seg_results, detector_results, batched_inputs, image_sizes
        ):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            sem_seg = sem_seg_postprocess(sem_seg, image_size, height, width)
            detections = detector_postprocess(detections, height, width)
            panoptic = combine_semantic_and_instance_outputs(
                _ranked_by_mask_scores(detections), sem_seg.argmax(dim=0),
                self.combine_overlap_thresh, self.combine_stuff_area_thresh,
                self.combine_instances_score_thresh,
            )
            processed.append({"sem_seg": sem_seg, "instances": detections,
                              "panoptic_seg": panoptic})
        return processed
