"""Mask Scoring R-CNN (Huang et al., CVPR 2019): a MaskIoU head that re-scores masks.

The MaskIoU head sees the mask branch's pooled RoI features (before the mask convs) together
with the predicted mask probability of one class, max-pooled to the features' resolution, and
regresses the IoU of that mask with its ground truth for every class (sec. 3.3). At test time
each detection's `mask_scores` is its classification score times the predicted MaskIoU of its
class (sec. 3.4). Defaults and initialisation follow the authors' reference,
zjhuang22/maskscoring_rcnn.

The head lives inside a mask head, :class:`MaskScoringConvUpsampleHead`, registered in
Detectron2's `ROI_MASK_HEAD_REGISTRY` (as PointRend extends Mask R-CNN): any ROI heads with a
mask branch (StandardROIHeads, CascadeROIHeads, Res5ROIHeads) keep their own pooling and mask
forward and get `loss_maskiou` and `instances.mask_scores` by setting
`MODEL.ROI_MASK_HEAD.NAME: "MaskScoringConvUpsampleHead"`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import (
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detectron2.structures import Instances
from detectron2.utils.registry import Registry
from torch import nn

from d2seg.config import register_config
from d2seg.modeling.roi_heads.mask_iou_targets import gt_inbox_fraction, mask_iou_targets

ROI_MASKIOU_HEAD_REGISTRY = Registry("ROI_MASKIOU_HEAD")
ROI_MASKIOU_HEAD_REGISTRY.__doc__ = """
Registry for MaskIoU heads: given pooled RoI features (R, C, S, S) and mask probabilities
(R, M, M), they predict (R, num_classes) mask IoUs. Selected by MODEL.ROI_MASKIOU_HEAD.NAME.
"""


def iou_conv_layers(in_channels: int, conv_dim: int, num_conv: int) -> tuple[list[nn.Module], int]:
    """`num_conv` x (3x3 conv + ReLU), the last with stride 2, convs kaiming-normal (fan_out,
    ReLU gain) with zero bias, as the reference IoU heads; returns the layers and their width.
    Shared by the MaskIoU head and Parsing R-CNN's ParsingIoU head."""
    layers: list[nn.Module] = []
    channels = in_channels
    for index in range(num_conv):
        stride = 2 if index == num_conv - 1 else 1
        conv = nn.Conv2d(channels, conv_dim, kernel_size=3, stride=stride, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        channels = conv_dim
    return layers, channels


def iou_fc_layers(in_features: int, fc_dim: int, num_fc: int) -> tuple[list[nn.Module], int]:
    """`num_fc` x (FC + ReLU), kaiming-uniform with a=1 and zero bias; the layers and width."""
    layers: list[nn.Module] = []
    features = in_features
    for _ in range(num_fc):
        fc = nn.Linear(features, fc_dim)
        nn.init.kaiming_uniform_(fc.weight, a=1)
        nn.init.zeros_(fc.bias)
        layers += [fc, nn.ReLU(inplace=True)]
        features = fc_dim
    return layers, features


def iou_predictor(in_features: int, outputs: int) -> nn.Linear:
    """The IoU regressor: normal init with std 0.01, zero bias."""
    predictor = nn.Linear(in_features, outputs)
    nn.init.normal_(predictor.weight, std=0.01)
    nn.init.zeros_(predictor.bias)
    return predictor


@register_config("MODEL.ROI_MASKIOU_HEAD")
def add_mask_scoring_config(cfg: CfgNode) -> None:
    """Mask Scoring R-CNN (Huang et al., CVPR 2019). Defaults follow the authors' reference
    implementation (zjhuang22/maskscoring_rcnn, maskrcnn_benchmark/config/defaults.py). The
    model turns it on with MODEL.ROI_MASK_HEAD.NAME "MaskScoringConvUpsampleHead"."""
    cfg.MODEL.ROI_MASKIOU_HEAD = CfgNode()
    cfg.MODEL.ROI_MASKIOU_HEAD.NAME = "MaskIoUHead"  # entry of ROI_MASKIOU_HEAD_REGISTRY
    cfg.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 256  # channels of the 4 convs (paper sec. 3.3)
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 4  # 3x3 convs; the last one has stride 2
    cfg.MODEL.ROI_MASKIOU_HEAD.FC_DIM = 1024  # width of the hidden FC layers
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_FC = 2  # hidden FC layers before the per-class output
    cfg.MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT = 1.0  # weight of the MaskIoU L2 loss (paper: 1)
    # Detach the predicted mask (and pooled features) fed to the MaskIoU head, so its loss does
    # not train the mask branch or backbone. Off in the reference implementation.
    cfg.MODEL.ROI_MASKIOU_HEAD.DETACH_INPUT = False
    # MaskScoringPanopticFPN orders instances by mask_scores in the panoptic merge; this names
    # the score PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH compares with (>=):
    # "mask_scores" or "scores"; "mask_scores" gave the higher PQ on the synthetic panoptic
    # split (docs/model_zoo.md, Mask Scoring R-CNN), though by 0.04 only.
    cfg.MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE = "mask_scores"


@ROI_MASKIOU_HEAD_REGISTRY.register()
class MaskIoUHead(nn.Module):
    """4 conv3x3 (the last stride 2) + ReLU, FC 1024, FC 1024, FC num_classes (paper sec. 3.3).

    Initialisation as the reference's MaskIoU feature extractor and predictor: convs
    kaiming-normal (fan_out, ReLU gain), hidden FCs kaiming-uniform with a=1, the predictor
    normal with std 0.01, every bias zero.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_classes: int,
        conv_dim: int,
        num_conv: int,
        fc_dim: int,
        num_fc: int,
    ):
        """
        Args:
            input_shape: the pooled RoI features; the mask probability adds one channel.
            num_classes: one IoU output per class.
            conv_dim, num_conv: width and number of the 3x3 convs; the last has stride 2.
            fc_dim, num_fc: width and number of the hidden fully connected layers.
        """
        super().__init__()
        convs, channels = iou_conv_layers(input_shape.channels + 1, conv_dim, num_conv)
        self.convs = nn.Sequential(*convs)
        side = (input_shape.height + 1) // 2 if num_conv else input_shape.height  # stride-2 conv
        fcs, features = iou_fc_layers(channels * side * side, fc_dim, num_fc)
        self.fcs = nn.Sequential(*fcs)
        self.predictor = iou_predictor(features, num_classes)

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
        """features: (R, C, S, S); mask_probs: (R, M, M) with M a multiple of S (28 = 2 x 14:
        the paper's max pooling with kernel 2 and stride 2)."""
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


def maskiou_loss(
    pred_maskiou: torch.Tensor, gt_classes: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """0.5 * squared error of the target class's predicted IoU, averaged over RoIs whose target
    is above zero (the reference's `l2_loss`). Without such RoIs: a zero that still depends on
    every prediction, so the head's parameters stay in the graph."""
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


@ROI_MASK_HEAD_REGISTRY.register()
class MaskScoringConvUpsampleHead(MaskRCNNConvUpsampleHead):
    """Detectron2's Mask R-CNN mask head plus a MaskIoU head that reads the same pooled RoI
    features. Training returns `loss_mask` and `loss_maskiou`; inference sets `pred_masks` and
    `mask_scores` on the instances."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        maskiou_head: nn.Module,
        maskiou_loss_weight: float,
        detach_maskiou_input: bool,
        **kwargs,
    ):
        """
        Args:
            input_shape: the pooled RoI features, as for MaskRCNNConvUpsampleHead.
            maskiou_head: predicts per-class mask IoUs from pooled features + mask probability.
            maskiou_loss_weight: multiplies the MaskIoU loss.
            detach_maskiou_input: stop the MaskIoU loss's gradient at the head's inputs.
            kwargs: MaskRCNNConvUpsampleHead's arguments.
        """
        super().__init__(input_shape, **kwargs)
        self.maskiou_head = maskiou_head
        self.maskiou_loss_weight = maskiou_loss_weight
        self.detach_maskiou_input = detach_maskiou_input

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret.update(
            maskiou_head=build_maskiou_head(cfg, input_shape),
            maskiou_loss_weight=cfg.MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT,
            detach_maskiou_input=cfg.MODEL.ROI_MASKIOU_HEAD.DETACH_INPUT,
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """The Mask R-CNN layers only (the parent runs every child of this nn.Sequential)."""
        for layer in self.children():
            if layer is not self.maskiou_head:
                x = layer(x)
        return x

    def forward(
        self, x: torch.Tensor, instances: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """
        Args:
            x: (R, C, S, S) pooled RoI features, the mask convs' input.
            instances: foreground proposals with ground truth in training, detections at
                inference.

        Returns:
            `{"loss_mask", "loss_maskiou"}` in training; else `instances` with `pred_masks` and
            `mask_scores` set.
        """
        mask_logits = self.layers(x)
        if self.training:
            loss_mask = mask_rcnn_loss(mask_logits, instances, self.vis_period)
            return {
                "loss_mask": loss_mask * self.loss_weight,
                "loss_maskiou": self._maskiou_loss(x, mask_logits, instances)
                * self.maskiou_loss_weight,
            }
        mask_rcnn_inference(mask_logits, instances)
        probs = cat([image.pred_masks[:, 0] for image in instances])
        maskiou_inference(self.maskiou_head(x, probs), instances)
        return instances

    def _maskiou_loss(
        self, features: torch.Tensor, mask_logits: torch.Tensor, instances: list[Instances]
    ) -> torch.Tensor:
        """MaskIoU loss on the foreground RoIs' target-class mask probabilities."""
        with_gt = [x for x in instances if len(x)]  # images without RoIs may lack gt_masks
        if not with_gt:
            # Run the head on the empty batch all the same: every parameter then gets a (zero)
            # gradient, and DistributedDataParallel needs no `find_unused_parameters`.
            return self.maskiou_head(features, mask_logits[:, 0]).sum() * 0.0
        gt_classes = cat([x.gt_classes for x in with_gt])
        side = mask_logits.shape[-1]
        gt_targets = cat(
            [x.gt_masks.crop_and_resize(x.proposal_boxes.tensor, side) for x in with_gt]
        ).to(mask_logits.device)
        fraction = cat(
            [gt_inbox_fraction(x.gt_masks, x.proposal_boxes.tensor, x.image_size) for x in with_gt]
        )
        logits = _of_class(mask_logits, gt_classes)
        targets = mask_iou_targets(logits, gt_targets, fraction)
        probs = logits.sigmoid()
        if self.detach_maskiou_input:
            features, probs = features.detach(), probs.detach()
        return maskiou_loss(self.maskiou_head(features, probs), gt_classes, targets)
