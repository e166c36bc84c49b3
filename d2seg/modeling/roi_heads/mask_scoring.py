"""Mask Scoring R-CNN (Huang et al., CVPR 2019): a MaskIoU head that re-scores masks.

The head sees the mask branch's pooled RoI features (before the mask convs) together with the
predicted mask probability of one class, max-pooled to the features' resolution, and regresses
the IoU of that mask with its ground truth for every class. At test time each detection's
`mask_scores` is its classification score times the predicted MaskIoU of its class (sec. 3.4).
Defaults and initialisation follow the authors' reference, zjhuang22/maskscoring_rcnn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import Instances
from detectron2.utils.registry import Registry
from torch import nn

from d2seg.data.targets.mask_iou import gt_inbox_fraction, mask_iou_targets

ROI_MASKIOU_HEAD_REGISTRY = Registry("ROI_MASKIOU_HEAD")
ROI_MASKIOU_HEAD_REGISTRY.__doc__ = """
Registry for MaskIoU heads: given pooled RoI features (R, C, S, S) and mask probabilities
(R, M, M), they predict (R, num_classes) mask IoUs. Selected by MODEL.ROI_MASKIOU_HEAD.NAME.
"""


@ROI_MASKIOU_HEAD_REGISTRY.register()
class MaskIoUHead(nn.Module):
    """4 conv3x3 (the last stride 2) + ReLU, FC 1024, FC 1024, FC num_classes (paper sec. 3.3)."""

    @configurable
    def __init__(self, *, input_shape: ShapeSpec, num_classes: int, conv_dim: int, num_conv: int,
                 fc_dim: int, num_fc: int):
        """
        Args:
            input_shape: the pooled RoI features; the mask probability adds one channel.
            num_classes: one IoU output per class.
            conv_dim, num_conv: width and number of the 3x3 convs; the last has stride 2.
            fc_dim, num_fc: width and number of the hidden fully connected layers.
        """
        super().__init__()
        convs = []
        channels = input_shape.channels + 1
        for index in range(num_conv):
            stride = 2 if index == num_conv - 1 else 1
            conv = nn.Conv2d(channels, conv_dim, kernel_size=3, stride=stride, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            convs += [conv, nn.ReLU(inplace=True)]
            channels = conv_dim
        self.convs = nn.Sequential(*convs)
        side = (input_shape.height + 1) // 2 if num_conv else input_shape.height  # stride-2 conv
        fcs = []
        features = channels * side * side
        for _ in range(num_fc):
            fc = nn.Linear(features, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            fcs += [fc, nn.ReLU(inplace=True)]
            features = fc_dim
        self.fcs = nn.Sequential(*fcs)
        self.predictor = nn.Linear(features, num_classes)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        head = cfg.MODEL.ROI_MASKIOU_HEAD
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dim": head.CONV_DIM,
            "num_conv": head.NUM_CONV,
            "fc_dim": head.FC_DIM,
            "num_fc": head.NUM_FC,
        }

    def forward(self, features: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        """features: (R, C, S, S); mask_probs: (R, M, M) with M a multiple of S (28 = 2 x 14)."""
        scale = mask_probs.shape[-1] // features.shape[-1]
        pooled_mask = F.max_pool2d(mask_probs[:, None], kernel_size=scale, stride=scale)
        x = self.convs(cat([features, pooled_mask], dim=1))
        return self.predictor(self.fcs(x.flatten(1)))


def build_maskiou_head(cfg: CfgNode, input_shape: ShapeSpec) -> nn.Module:
    """The MaskIoU head named by MODEL.ROI_MASKIOU_HEAD.NAME."""
    return ROI_MASKIOU_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASKIOU_HEAD.NAME)(cfg, input_shape)


def _of_class(per_class: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Pick each row's entry for its class; class-agnostic outputs (one channel) use channel 0."""
    index = classes if per_class.shape[1] > 1 else torch.zeros_like(classes)
    return per_class[torch.arange(len(classes), device=per_class.device), index]


def maskiou_loss(pred_maskiou: torch.Tensor, gt_classes: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """0.5 * squared error of the target class's predicted IoU, averaged over RoIs whose target
    is above zero (the reference's `l2_loss`)."""
    predicted = _of_class(pred_maskiou, gt_classes)
    positive = targets > 0
    if not positive.any():
        return pred_maskiou.sum() * 0.0
    return 0.5 * ((predicted[positive] - targets[positive]) ** 2).mean()


def maskiou_inference(pred_maskiou: torch.Tensor, instances: list[Instances]) -> None:
    """Set `mask_scores = scores * predicted MaskIoU of the predicted class` on each image."""
    classes = cat([x.pred_classes for x in instances])
    ious = _of_class(pred_maskiou, classes).split([len(x) for x in instances])
    for image_instances, iou in zip(instances, ious):
        image_instances.mask_scores = image_instances.scores * iou


@ROI_HEADS_REGISTRY.register()
class MaskScoringROIHeads(StandardROIHeads):
    """StandardROIHeads plus a MaskIoU head on the mask branch (loss `loss_maskiou`, output
    `instances.mask_scores`). Works wherever StandardROIHeads does (GeneralizedRCNN,
    PanopticFPN)."""

    @configurable
    def __init__(self, *, maskiou_head: nn.Module, maskiou_loss_weight: float,
                 detach_maskiou_input: bool, **kwargs):
        """
        Args:
            maskiou_head: predicts per-class mask IoUs from pooled features + mask probability.
            maskiou_loss_weight: multiplies the MaskIoU loss.
            detach_maskiou_input: stop the MaskIoU loss's gradient at the head's inputs.
            kwargs: StandardROIHeads' arguments.
        """
        super().__init__(**kwargs)
        self.maskiou_head = maskiou_head
        self.maskiou_loss_weight = maskiou_loss_weight
        self.detach_maskiou_input = detach_maskiou_input

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_maskiou_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_maskiou_head(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        if not cfg.MODEL.MASK_ON:
            raise ValueError("MaskScoringROIHeads re-scores masks: it needs MODEL.MASK_ON True")
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        channels = input_shape[in_features[0]].channels
        pooled = ShapeSpec(channels=channels, height=resolution, width=resolution)
        return {
            "maskiou_head": build_maskiou_head(cfg, pooled),
            "maskiou_loss_weight": cfg.MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT,
            "detach_maskiou_input": cfg.MODEL.ROI_MASKIOU_HEAD.DETACH_INPUT,
        }

    def _forward_mask(self, features: dict[str, torch.Tensor], instances: list[Instances]):
        """Mask branch + MaskIoU branch: losses in training, filled-in instances at inference."""
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        pooled = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        mask_logits = self.mask_head.layers(pooled)
        if self.training:
            losses = {"loss_mask": mask_rcnn_loss(mask_logits, instances,
                                                  self.mask_head.vis_period)
                      * self.mask_head.loss_weight}
            losses["loss_maskiou"] = self._maskiou_loss(pooled, mask_logits, instances)
            return losses
        mask_rcnn_inference(mask_logits, instances)
        if sum(len(x) for x in instances):
            probs = cat([x.pred_masks[:, 0] for x in instances])
            maskiou_inference(self.maskiou_head(pooled, probs), instances)
        else:
            for x in instances:
                x.mask_scores = x.scores
        return instances

    def _maskiou_loss(self, pooled: torch.Tensor, mask_logits: torch.Tensor,
                      instances: list[Instances]) -> torch.Tensor:
        gt_classes = cat([x.gt_classes for x in instances]) if instances else None
        if gt_classes is None or len(gt_classes) == 0:
            return mask_logits.sum() * 0.0
        logits = _of_class(mask_logits, gt_classes)
        side = mask_logits.shape[-1]
        gt_targets = cat([x.gt_masks.crop_and_resize(x.proposal_boxes.tensor, side)
                          for x in instances])
        fraction = cat([gt_inbox_fraction(x.gt_masks, x.proposal_boxes.tensor, x.image_size)
                        for x in instances])
        targets = mask_iou_targets(logits, gt_targets.to(logits.device), fraction)
        probs = logits.sigmoid()
        if self.detach_maskiou_input:
            pooled, probs = pooled.detach(), probs.detach()
        predicted = self.maskiou_head(pooled, probs)
        return maskiou_loss(predicted, gt_classes, targets) * self.maskiou_loss_weight
