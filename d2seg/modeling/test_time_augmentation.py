"""Test-time augmentation for R-CNN models, as Detectron2's `GeneralizedRCNNWithTTA`, extended
to Parsing R-CNN's part probabilities the way the authors' `rcnn/core/test.py` combines them
(soeaver/Parsing-R-CNN, `im_detect_parsing` with TEST.PARSING_AUG.HEUR 'SOFT_AVG').

The augmentations are Detectron2's (TEST.AUG.MIN_SIZES, TEST.AUG.MAX_SIZE, TEST.AUG.FLIP, read
by its `DatasetMapperTTA`): the boxes of every augmented image are merged by NMS, then each
augmented image predicts the parts of the merged boxes, and the predictions are averaged on
the head's grid after flipped ones are mirrored back with their left and right parts swapped.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data.transforms import HFlipTransform, TransformList
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch import nn

from d2seg.data.mappers.parsing import dataset_flip_pairs
from d2seg.data.targets.parsing import flip_lookup
from d2seg.modeling.postprocessing.parsing import PartProbabilities


def part_flip_order(flip_pairs: list[tuple[int, int]], num_parts: int) -> torch.Tensor:
    """(num_parts,) channel order that swaps each (left, right) pair of part ids: indexing the
    part channels of a mirrored prediction with it puts each part back in its own channel."""
    if any(int(part) >= num_parts for pair in flip_pairs for part in pair):
        raise ValueError(
            f"parsing_flip_pairs {flip_pairs} name a part id >= the model's {num_parts} parts"
        )
    return torch.from_numpy(flip_lookup(flip_pairs)[:num_parts].astype(np.int64))


def _is_flipped(transforms: TransformList) -> bool:
    return any(isinstance(t, HFlipTransform) for t in transforms.transforms)


class ParsingRCNNWithTTA(GeneralizedRCNNWithTTA):
    """A Parsing R-CNN (a GeneralizedRCNN whose ROI heads have a parsing branch) with test-time
    augmentation; called like the model, it returns `instances` with the merged boxes, their
    averaged `pred_parsing` probabilities and `parsing_scores` (and averaged `pred_masks` with
    MODEL.MASK_ON), as Detectron2's wrapper does for masks.

    The authors pool every augmentation's raw boxes before one NMS; Detectron2, and so this
    wrapper, runs each augmentation's NMS first and merges the survivors with a second one.
    """

    def __init__(
        self,
        cfg: CfgNode,
        model: nn.Module,
        flip_pairs: list[tuple[int, int]],
        tta_mapper=None,
        batch_size: int = 3,
    ):
        """
        Args:
            cfg, model, tta_mapper, batch_size: as Detectron2's GeneralizedRCNNWithTTA.
            flip_pairs: the (left, right) part ids a horizontal flip swaps (the test
                datasets' `parsing_flip_pairs` metadata).
        """
        super().__init__(cfg, model, tta_mapper, batch_size)
        self.flip_order = part_flip_order(flip_pairs, cfg.MODEL.ROI_PARSING_HEAD.NUM_PARSING)

    def _inference_one_image(self, input: dict) -> dict:
        orig_shape = (input["height"], input["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        with self._turn_off_roi_heads(["mask_on", "keypoint_on", "parsing_on"]):
            all_boxes, all_scores, all_classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(all_boxes, all_scores, all_classes, orig_shape)
        if not (self.cfg.MODEL.MASK_ON or self.cfg.MODEL.PARSING_ON):
            return {"instances": merged}
        augmented_instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
        outputs = self._batch_inference(augmented_inputs, augmented_instances)
        del augmented_inputs, augmented_instances
        if self.cfg.MODEL.PARSING_ON:
            merged.pred_parsing, merged.parsing_scores = self._reduce_parsing(outputs, tfms)
        if self.cfg.MODEL.MASK_ON:
            merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        return {"instances": detector_postprocess(merged, *orig_shape)}

    def _reduce_parsing(
        self, outputs: list[Instances], tfms: list[TransformList]
    ) -> tuple[PartProbabilities, torch.Tensor]:
        """The mean of the augmentations' part probabilities (the authors' SOFT_AVG), each
        flipped one mirrored back on the box grid with its left/right channels swapped, and
        the mean of their parsing scores."""
        probabilities = []
        for output, tfm in zip(outputs, tfms):
            probs = output.pred_parsing.tensor
            if _is_flipped(tfm):
                probs = probs.flip(dims=[3])[:, self.flip_order.to(probs.device)]
            probabilities.append(probs)
        scores = torch.stack([output.parsing_scores for output in outputs]).mean(dim=0)
        return PartProbabilities(torch.stack(probabilities).mean(dim=0)), scores


def build_rcnn_tta(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """`model` with test-time augmentation: :class:`ParsingRCNNWithTTA` for Parsing R-CNN (the
    flip pairs of the test datasets), Detectron2's GeneralizedRCNNWithTTA for other R-CNNs."""
    if cfg.MODEL.PARSING_ON:
        remedy = "set TEST.AUG.FLIP False to augment without flipping"
        pairs = dataset_flip_pairs(list(cfg.DATASETS.TEST), remedy) if cfg.TEST.AUG.FLIP else []
        return ParsingRCNNWithTTA(cfg, model, pairs)
    return GeneralizedRCNNWithTTA(cfg, model)
