"""Parsing R-CNN (Yang et al., CVPR 2019, "Parsing R-CNN for Instance-Level Human Analysis"):
a per-person part-parsing branch on Detectron2's StandardROIHeads, and the optional ParsingIoU
re-scoring head of RP R-CNN (Yang et al., 2020).

Layer order, widths and initialisation follow the authors' reference, soeaver/Parsing-R-CNN
(`rcnn/modeling/parsing_rcnn/heads/gce_heads.py`, `outputs.py`, `models/ops/nonlocal2d.py`,
`parsingiou/heads.py`) with its CIHP R-50-FPN configs: RoIAlign 32 x 32 on P2 only, the
Geometric and Context Encoding (GCE) head, 128 x 128 part logits, cross-entropy x 2.0.
"""

from __future__ import annotations

import fvcore.nn.weight_init as init
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec, cat, get_norm
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import ImageList, Instances
from detectron2.utils.registry import Registry
from torch import nn

from d2seg.config import register_config
from d2seg.modeling.mixed_precision import fp32_softmax_affinity, scaled_dot_product
from d2seg.modeling.postprocessing.parsing import PartProbabilities
from d2seg.modeling.roi_heads.mask_scoring import (
    iou_conv_layers,
    iou_fc_layers,
    iou_predictor,
    maskiou_loss,
)
from d2seg.modeling.roi_heads.parsing_targets import (
    check_part_ids,
    crop_and_resize_part_maps,
    parsing_iou,
)

ROI_PARSING_HEAD_REGISTRY = Registry("ROI_PARSING_HEAD")
ROI_PARSING_HEAD_REGISTRY.__doc__ = """
Registry for parsing heads: given RoI features (R, C, S, S) pooled from P2 they return part
logits (R, NUM_PARSING, M, M) and their last hidden features (R, D, S, S), which the ParsingIoU
head reads. Selected by MODEL.ROI_PARSING_HEAD.NAME.
"""


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str, dilation: int = 1):
    """Conv (+ norm) + ReLU, initialised like the reference's `make_conv` (MSRA fill, zero
    bias; no bias under a norm)."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    init.c2_msra_fill(conv)
    return conv


class NonLocalBlock2d(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018) as the reference's
    `NonLocal2d`: theta on the input, phi and g on the input max-pooled 2 x 2, affinity
    softmax(theta^T phi * inner^-0.5) over the pooled positions, output 1x1 conv -> GroupNorm(32)
    -> added to the input. Convs start from N(0, 0.01) weights and zero biases. Mixed precision:
    the affinity and its softmax are computed in float32 (:func:`fp32_softmax_affinity`)."""

    def __init__(self, channels: int, inner_channels: int, pool_stride: int = 2):
        super().__init__()
        self.inner_channels = inner_channels
        self.theta = nn.Conv2d(channels, inner_channels, 1)
        self.phi = nn.Conv2d(channels, inner_channels, 1)
        self.g = nn.Conv2d(channels, inner_channels, 1)
        self.pool = nn.MaxPool2d(pool_stride, stride=pool_stride)
        self.out = nn.Conv2d(inner_channels, channels, 1)
        self.norm = nn.GroupNorm(32, channels)
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        pooled = self.pool(x)
        theta = self.theta(x).flatten(2)  # (N, inner, HW)
        phi = self.phi(pooled).flatten(2)  # (N, inner, HW / 4)
        g = self.g(pooled).flatten(2)
        affinity = fp32_softmax_affinity(
            scaled_dot_product, theta.transpose(1, 2), phi
        )  # (N, HW, HW / 4)
        y = (g @ affinity.transpose(1, 2)).reshape(n, self.inner_channels, height, width)
        return x + self.norm(self.out(y))


@register_config(
    "MODEL.PARSING_ON",
    "MODEL.ROI_PARSING_HEAD",
    "MODEL.PARSINGIOU_ON",
    "MODEL.ROI_PARSINGIOU_HEAD",
)
def add_parsing_config(cfg: CfgNode) -> None:
    """Parsing R-CNN (Yang et al., CVPR 2019). Defaults are the authors' CIHP R-50-FPN configs
    (soeaver/Parsing-R-CNN, cfgs/CIHP/e2e_parsing_rcnn_R-50-FPN_*x_ms.yaml over
    rcnn/core/config.py); the ParsingIoU head is RP R-CNN's (Yang et al., 2020)."""
    cfg.MODEL.PARSING_ON = False  # add the parsing branch (ParsingROIHeads)
    head = cfg.MODEL.ROI_PARSING_HEAD = CfgNode()
    head.NAME = "ParsingGCEHead"  # entry of ROI_PARSING_HEAD_REGISTRY
    head.IN_FEATURES = ["p2"]  # every RoI pooled from P2 only (reference ROI_STRIDES [4])
    head.POOLER_RESOLUTION = 32  # RoIAlign output (reference ROI_XFORM_RESOLUTION)
    head.POOLER_SAMPLING_RATIO = 2  # reference ROI_XFORM_SAMPLING_RATIO
    head.POOLER_TYPE = "ROIAlignV2"  # as Detectron2's heads (reference: unaligned ROIAlign)
    head.NUM_PARSING = 20  # part classes incl. background (CIHP / LIP 20, MHP-v2 59)
    head.RESOLUTION = 128  # side of the predicted logits and targets (paper sec. 3.1)
    head.ASPP_DIM = 256  # width of each ASPP branch (reference ASPPV3_DIM)
    head.ASPP_DILATIONS = [6, 12, 18]  # dilations of the 3x3 ASPP branches
    head.CONV_DIM = 512  # width after the ASPP and of the convs after the non-local block
    head.NUM_CONVS = 4  # 3x3 convs after the non-local block (NUM_CONVS_AFTER_ASPPV3)
    head.USE_NONLOCAL = True  # non-local block after the ASPP (reference USE_NL)
    head.NONLOCAL_RATIO = 1.0  # non-local inner width / CONV_DIM (reference NL_RATIO)
    head.NORM = ""  # norm of the head's convs: "" (Parsing R-CNN) or "GN" (RP R-CNN)
    head.ROI_SIZE_PER_IMG = 16  # foreground RoIs per image sampled for the loss (-1: all)
    head.LOSS_WEIGHT = 2.0  # cross-entropy weight ("double loss weight" in the configs)
    head.IGNORE_VALUE = 255  # target id left out of the loss (reference PARSING_IGNORE_LABEL)
    cfg.MODEL.PARSINGIOU_ON = False  # RP R-CNN re-scoring: parsing_scores = sqrt(score x IoU)
    iou = cfg.MODEL.ROI_PARSINGIOU_HEAD = CfgNode()
    iou.NUM_CONV = 2  # 3x3 convs, the last with stride 2 (reference NUM_STACKED_CONVS)
    iou.CONV_DIM = 128  # their width
    iou.NUM_FC = 2  # hidden fully connected layers after global average pooling
    iou.FC_DIM = 256  # their width (reference MLP_DIM)
    iou.LOSS_WEIGHT = 1.0  # weight of the L2 loss on RoIs with a positive IoU target


@ROI_PARSING_HEAD_REGISTRY.register()
class ParsingGCEHead(nn.Module):
    """Parsing R-CNN's GCE head (paper sec. 3.3, Fig. 4), layer by layer as the reference:

    ASPP [image pooling 1x1, 1x1, 3x3 dilated 6 / 12 / 18] (each ASPP_DIM + ReLU) -> concat
    -> 1x1 CONV_DIM + ReLU -> non-local block -> NUM_CONVS x (3x3 CONV_DIM + ReLU) ->
    ConvTranspose 4x4 stride 2 to NUM_PARSING channels -> bilinear up to RESOLUTION.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_parsing: int,
        resolution: int,
        aspp_dim: int,
        aspp_dilations: list[int],
        conv_dim: int,
        num_convs: int,
        use_nonlocal: bool,
        nonlocal_ratio: float,
        norm: str,
    ):
        """
        Args:
            input_shape: the pooled RoI features (channels, S x S).
            num_parsing: part classes, background included.
            resolution: side M of the output logits; a multiple of 2 S.
            aspp_dim: width of each ASPP branch.
            aspp_dilations: dilations of the 3x3 ASPP branches.
            conv_dim: width after the ASPP and of the convs after the non-local block.
            num_convs: 3x3 convs after the non-local block.
            use_nonlocal: include the non-local block.
            nonlocal_ratio: inner width of the non-local block, as a fraction of conv_dim.
            norm: norm of every conv ("" none, as Parsing R-CNN; "GN" as RP R-CNN).
        """
        super().__init__()
        side = input_shape.height
        if resolution % (2 * side):
            raise ValueError(
                f"MODEL.ROI_PARSING_HEAD.RESOLUTION {resolution} must be a multiple of twice "
                f"POOLER_RESOLUTION {side} (the deconv doubles it, bilinear does the rest)"
            )
        self.up_scale = resolution // (2 * side)
        channels = input_shape.channels
        self.aspp_pool = _conv(channels, aspp_dim, 1, norm)
        self.aspp = nn.ModuleList(
            [_conv(channels, aspp_dim, 1, norm)]
            + [_conv(channels, aspp_dim, 3, norm, dilation=d) for d in aspp_dilations]
        )
        self.fuse = _conv(aspp_dim * (len(aspp_dilations) + 2), conv_dim, 1, norm)
        self.nonlocal_block = (
            NonLocalBlock2d(conv_dim, int(conv_dim * nonlocal_ratio)) if use_nonlocal else None
        )
        self.convs = nn.Sequential(*[_conv(conv_dim, conv_dim, 3, norm) for _ in range(num_convs)])
        self.predictor = nn.ConvTranspose2d(conv_dim, num_parsing, 4, stride=2, padding=1)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.predictor.bias)
        self.output_channels = conv_dim

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        head = cfg.MODEL.ROI_PARSING_HEAD
        return {
            "input_shape": input_shape,
            "num_parsing": head.NUM_PARSING,
            "resolution": head.RESOLUTION,
            "aspp_dim": head.ASPP_DIM,
            "aspp_dilations": list(head.ASPP_DILATIONS),
            "conv_dim": head.CONV_DIM,
            "num_convs": head.NUM_CONVS,
            "use_nonlocal": head.USE_NONLOCAL,
            "nonlocal_ratio": head.NONLOCAL_RATIO,
            "norm": head.NORM,
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, C, S, S) pooled features -> (R, NUM_PARSING, M, M) logits, (R, CONV_DIM, S, S)
        features before the predictor."""
        image_pool = self.aspp_pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
        x = self.fuse(cat([image_pool] + [branch(x) for branch in self.aspp], dim=1))
        if self.nonlocal_block is not None:
            x = self.nonlocal_block(x)
        features = self.convs(x)
        logits = self.predictor(features)
        if self.up_scale > 1:
            logits = F.interpolate(
                logits, scale_factor=self.up_scale, mode="bilinear", align_corners=False
            )
        return logits, features


def build_parsing_head(cfg: CfgNode, input_shape: ShapeSpec) -> nn.Module:
    """The parsing head named by MODEL.ROI_PARSING_HEAD.NAME."""
    return ROI_PARSING_HEAD_REGISTRY.get(cfg.MODEL.ROI_PARSING_HEAD.NAME)(cfg, input_shape)


class ParsingIoUHead(nn.Module):
    """RP R-CNN's ParsingIoU head (the reference's `parsingiou/heads.py` `convx_head` and
    `linear_output`): the parsing head's features concatenated with its logits max-pooled to
    the same size, NUM_CONV x (3x3 conv + ReLU, the last one stride 2), global average pooling,
    NUM_FC x (FC + ReLU), FC to one IoU. Inputs are not detached, as in the reference."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_parsing: int,
        conv_dim: int,
        num_conv: int,
        fc_dim: int,
        num_fc: int,
    ):
        """
        Args:
            in_channels: channels of the parsing head's features.
            num_parsing: part classes (channels of the pooled logits).
            conv_dim, num_conv: width and number of the 3x3 convs (the last has stride 2).
            fc_dim, num_fc: width and number of the hidden fully connected layers.
        """
        super().__init__()
        convs, channels = iou_conv_layers(in_channels + num_parsing, conv_dim, num_conv)
        fcs, features = iou_fc_layers(channels, fc_dim, num_fc)
        self.layers = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *fcs)
        self.predictor = iou_predictor(features, 1)

    @classmethod
    def from_config(cls, cfg: CfgNode, in_channels: int) -> dict:
        head = cfg.MODEL.ROI_PARSINGIOU_HEAD
        return {
            "in_channels": in_channels,
            "num_parsing": cfg.MODEL.ROI_PARSING_HEAD.NUM_PARSING,
            "conv_dim": head.CONV_DIM,
            "num_conv": head.NUM_CONV,
            "fc_dim": head.FC_DIM,
            "num_fc": head.NUM_FC,
        }

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """features (R, D, S, S), logits (R, K, M, M) with M a multiple of S -> (R,) IoUs."""
        scale = logits.shape[-1] // features.shape[-1]
        pooled = F.max_pool2d(logits, kernel_size=scale, stride=scale)
        return self.predictor(self.layers(cat([features, pooled], dim=1)))[:, 0]


def parsing_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_value: int) -> torch.Tensor:
    """Cross-entropy over every pixel of every RoI (the reference's `F.cross_entropy`, mean
    reduction), skipping target pixels equal to `ignore_value`.

    Args:
        logits: (R, K, M, M) part logits.
        targets: (R, M, M) int64 part ids.
        ignore_value: target id left out of the loss.

    Returns:
        Scalar loss; with no RoI, a zero that still depends on every logit.
    """
    if targets.numel() == 0:
        return logits.sum() * 0.0
    check_part_ids(targets, logits.shape[1], ignore_value)
    return F.cross_entropy(logits, targets, ignore_index=ignore_value)


def parsing_inference(
    logits: torch.Tensor, instances: list[Instances], pred_iou: torch.Tensor | None = None
) -> None:
    """Set `pred_parsing` (softmax part probabilities, pasted lazily, see
    :class:`PartProbabilities`) and `parsing_scores` on each image's detections.

    `parsing_scores` is the detection score, or with a ParsingIoU prediction
    sqrt(score x predicted IoU) (RP R-CNN sec. 3.3; the regressed IoU is clamped to [0, 1] here,
    where the reference takes it as it is, so that a negative one cannot give NaN).
    """
    probabilities = torch.softmax(logits, dim=1).split([len(x) for x in instances])
    ious = pred_iou.split([len(x) for x in instances]) if pred_iou is not None else None
    for index, (image_instances, probs) in enumerate(zip(instances, probabilities)):
        image_instances.pred_parsing = PartProbabilities(probs)
        scores = image_instances.scores
        if ious is not None:
            scores = torch.sqrt(scores * ious[index].clamp(0, 1))
        image_instances.parsing_scores = scores


def sample_parsing_rois(proposals: list[Instances], per_image: int) -> list[Instances]:
    """At most `per_image` proposals of each image, chosen uniformly at random (the reference's
    `across_sample` with ROI_SIZE_PER_IMG); a negative `per_image` keeps all of them."""
    sampled = []
    for image_proposals in proposals:
        if 0 <= per_image < len(image_proposals):
            keep = torch.randperm(len(image_proposals), device=image_proposals.gt_classes.device)
            image_proposals = image_proposals[keep[:per_image]]
        sampled.append(image_proposals)
    return sampled


@ROI_HEADS_REGISTRY.register()
class ParsingROIHeads(StandardROIHeads):
    """StandardROIHeads (person boxes; mask branch optional) plus a parsing branch: loss
    `loss_parsing` (and `loss_parsingiou` with MODEL.PARSINGIOU_ON), outputs
    `instances.pred_parsing` and `instances.parsing_scores`.

    Training RoIs are the box head's sampled proposals (ground-truth boxes appended) that it
    labels foreground (IoU >= ROI_HEADS.IOU_THRESHOLDS, 0.5), at most ROI_SIZE_PER_IMG per image
    at random. Features come from P2 only (the reference's ROI_STRIDES [4]) for every RoI.
    """

    @configurable
    def __init__(
        self,
        *,
        parsing_in_features: list[str] | None = None,
        parsing_pooler: ROIPooler | None = None,
        parsing_head: nn.Module | None = None,
        parsingiou_head: nn.Module | None = None,
        parsing_loss_weight: float = 1.0,
        parsingiou_loss_weight: float = 1.0,
        parsing_rois_per_image: int = -1,
        parsing_ignore_value: int = 255,
        **kwargs,
    ):
        """
        Args:
            parsing_in_features: the feature maps the parsing RoIs are pooled from; None turns
                the parsing branch off (MODEL.PARSING_ON False).
            parsing_pooler: pools them to the head's input size.
            parsing_head: a ROI_PARSING_HEAD_REGISTRY head.
            parsingiou_head: optional ParsingIoU head (re-scores `parsing_scores`).
            parsing_loss_weight, parsingiou_loss_weight: multiply the two losses.
            parsing_rois_per_image: foreground RoIs sampled per image for the parsing loss.
            parsing_ignore_value: target id left out of the loss.
            kwargs: StandardROIHeads' arguments.
        """
        super().__init__(**kwargs)
        self.parsing_on = parsing_in_features is not None
        self.parsing_in_features = parsing_in_features
        self.parsing_pooler = parsing_pooler
        self.parsing_head = parsing_head
        self.parsingiou_head = parsingiou_head
        self.parsing_loss_weight = parsing_loss_weight
        self.parsingiou_loss_weight = parsingiou_loss_weight
        self.parsing_rois_per_image = parsing_rois_per_image
        self.parsing_ignore_value = parsing_ignore_value

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_parsing_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_parsing_head(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        if not cfg.MODEL.PARSING_ON:
            return {}
        head = cfg.MODEL.ROI_PARSING_HEAD
        in_features = list(head.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ROI_PARSING_HEAD.IN_FEATURES {in_features}: {missing} not among the "
                f"backbone's outputs {sorted(input_shape)}"
            )
        pooler = ROIPooler(
            output_size=head.POOLER_RESOLUTION,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=head.POOLER_SAMPLING_RATIO,
            pooler_type=head.POOLER_TYPE,
        )
        pooled = ShapeSpec(
            channels=input_shape[in_features[0]].channels,
            height=head.POOLER_RESOLUTION,
            width=head.POOLER_RESOLUTION,
        )
        parsing_head = build_parsing_head(cfg, pooled)
        return {
            "parsing_in_features": in_features,
            "parsing_pooler": pooler,
            "parsing_head": parsing_head,
            "parsingiou_head": (
                ParsingIoUHead(cfg, parsing_head.output_channels)
                if cfg.MODEL.PARSINGIOU_ON
                else None
            ),
            "parsing_loss_weight": head.LOSS_WEIGHT,
            "parsingiou_loss_weight": cfg.MODEL.ROI_PARSINGIOU_HEAD.LOSS_WEIGHT,
            "parsing_rois_per_image": head.ROI_SIZE_PER_IMG,
            "parsing_ignore_value": head.IGNORE_VALUE,
        }

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ):
        """StandardROIHeads' forward; in training the parsing losses are added (at inference
        the parsing branch runs in :meth:`forward_with_given_boxes`)."""
        instances, losses = super().forward(images, features, proposals, targets)
        if self.training:
            losses.update(self._forward_parsing(features, instances))
        return instances, losses

    def forward_with_given_boxes(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> list[Instances]:
        instances = super().forward_with_given_boxes(features, instances)
        return self._forward_parsing(features, instances)

    def _forward_parsing(self, features: dict[str, torch.Tensor], instances: list[Instances]):
        """Parsing branch: losses from sampled foreground proposals in training; at inference
        `pred_parsing` and `parsing_scores` set on the detections."""
        if not self.parsing_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = sample_parsing_rois(instances, self.parsing_rois_per_image)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        pooled = self.parsing_pooler([features[f] for f in self.parsing_in_features], boxes)
        logits, head_features = self.parsing_head(pooled)
        pred_iou = (
            self.parsingiou_head(head_features, logits)
            if self.parsingiou_head is not None
            else None
        )
        if not self.training:
            parsing_inference(logits, instances, pred_iou)
            return instances
        targets = self._parsing_targets(instances, logits)
        losses = {
            "loss_parsing": parsing_loss(logits, targets, self.parsing_ignore_value)
            * self.parsing_loss_weight
        }
        if pred_iou is not None:
            iou_targets = parsing_iou(
                logits.detach().argmax(dim=1), targets, logits.shape[1], self.parsing_ignore_value
            )
            zeros = torch.zeros_like(iou_targets, dtype=torch.long)  # one class-agnostic IoU
            losses["loss_parsingiou"] = (
                maskiou_loss(pred_iou[:, None], zeros, iou_targets) * self.parsingiou_loss_weight
            )
        return losses

    def _parsing_targets(self, proposals: list[Instances], logits: torch.Tensor) -> torch.Tensor:
        """(R, M, M) int64 part ids of the sampled RoIs (images without RoIs may lack
        `gt_parsing`, which Detectron2 only copies from non-empty ground truth)."""
        side = logits.shape[-1]
        with_rois = [x for x in proposals if len(x)]
        if not with_rois:
            return torch.zeros((0, side, side), dtype=torch.long, device=logits.device)
        targets = [
            crop_and_resize_part_maps(
                x.gt_parsing.maps, x.gt_parsing.person_index, x.proposal_boxes.tensor, side
            )
            for x in with_rois
        ]
        return cat(targets).to(logits.device)
