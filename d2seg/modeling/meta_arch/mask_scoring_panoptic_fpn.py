"""Panoptic FPN whose instance-vs-semantic merge ranks instances by their mask quality."""

from __future__ import annotations

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, PanopticFPN
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import Instances

THRESH_SCORES = ("mask_scores", "scores")


def _checked_thresh_score(name: str) -> str:
    if name not in THRESH_SCORES:
        raise ValueError(
            f"MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE must be one of {THRESH_SCORES}, "
            f"got {name!r}"
        )
    return name


def ranked_by_mask_scores(
    instances: Instances, score_thresh: float, thresh_score: str
) -> tuple[Instances, float]:
    """What to pass to Detectron2's `combine_semantic_and_instance_outputs` (which orders by
    `scores` and keeps those >= its threshold) so that it orders by `mask_scores`.

    Args:
        instances: detections; without `mask_scores` they are returned as they are.
        score_thresh: PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH.
        thresh_score: the score that threshold applies to, "mask_scores" or "scores".

    Returns:
        A view of the kept instances whose `scores` are their mask scores, and the threshold
        to apply to it. `instances` itself is left unchanged.
    """
    if not instances.has("mask_scores"):
        return instances, score_thresh
    if _checked_thresh_score(thresh_score) == "scores":
        instances = instances[instances.scores >= score_thresh]
        score_thresh = float("-inf")  # mask_scores may be negative: the MaskIoU is a regression
    ranked = Instances(instances.image_size, **instances.get_fields())
    ranked.scores = instances.mask_scores
    return ranked, score_thresh


@META_ARCH_REGISTRY.register()
class MaskScoringPanopticFPN(PanopticFPN):
    """PanopticFPN with a Mask Scoring mask head: the panoptic merge orders instances by
    `mask_scores` rather than classification scores, and applies
    PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH to the score named by
    MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE; the `instances` output keeps both scores."""

    @configurable
    def __init__(self, *, thresh_score: str = "mask_scores", **kwargs):
        """
        Args:
            thresh_score: "mask_scores" or "scores", the score compared with
                `combine_instances_score_thresh`.
            kwargs: PanopticFPN's arguments.
        """
        super().__init__(**kwargs)
        self.thresh_score = _checked_thresh_score(thresh_score)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        ret = super().from_config(cfg)
        ret["thresh_score"] = cfg.MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE
        return ret

    def inference(self, batched_inputs: list[dict], do_postprocess: bool = True):
        """PanopticFPN.inference, with the merge of :func:`ranked_by_mask_scores`."""
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
            ranked, score_thresh = ranked_by_mask_scores(
                detections, self.combine_instances_score_thresh, self.thresh_score
            )
            panoptic = combine_semantic_and_instance_outputs(
                ranked,
                sem_seg.argmax(dim=0),
                self.combine_overlap_thresh,
                self.combine_stuff_area_thresh,
                score_thresh,
            )
            processed.append(
                {"sem_seg": sem_seg, "instances": detections, "panoptic_seg": panoptic}
            )
        return processed
