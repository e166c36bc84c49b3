"""Panoptic-DeepLab (Cheng et al., CVPR 2020): bottom-up panoptic segmentation.

A shared backbone feeds two DeepLabV3+ decoders (sec. 3.1): a semantic one (ASPP 256 ch,
projections of res3 -> 64 and res2 -> 32 channels, 256-ch fuse convs) and an instance one
(same layout, 128 ch, projections 32 / 16) whose heads predict a centre heatmap and (dy, dx)
offsets. Predictions are made at stride 4 and upsampled x4 (offsets scaled x4 too).
Losses (sec. 3.4): semantic cross-entropy with hard-pixel mining, centre MSE x 200, offset
L1 x 0.01. Post-processing lives in `d2seg.modeling.postprocessing.panoptic_deeplab`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.layers import ASPP, Conv2d, DepthwiseSeparableConv2d, ShapeSpec, get_norm
from detectron2.modeling import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from detectron2.utils.registry import Registry
from fvcore.nn import weight_init
from torch import nn

from d2seg.modeling.postprocessing.panoptic_deeplab import panoptic_deeplab_inference

INS_EMBED_BRANCHES_REGISTRY = Registry("INS_EMBED_BRANCHES")
INS_EMBED_BRANCHES_REGISTRY.__doc__ = """
Registry for Panoptic-DeepLab instance branches (centre heatmap + offsets), selected by
MODEL.INS_EMBED_HEAD.NAME.
"""


def _conv(in_channels: int, out_channels: int, norm: str, separable: bool) -> nn.Module:
    """3x3 conv + norm + ReLU, or the light head's 5x5 depthwise-separable conv (sec. 4)."""
    if separable:
        return DepthwiseSeparableConv2d(in_channels, out_channels, kernel_size=5, padding=2,
                                        norm1=norm, activation1=F.relu, norm2=norm,
                                        activation2=F.relu)
    conv = Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm,
                  norm=get_norm(norm, out_channels), activation=F.relu)
    weight_init.c2_xavier_fill(conv)
    return conv


def _head(in_channels: int, head_channels: int, out_channels: int, norm: str,
          separable: bool) -> nn.Sequential:
    """Prediction head: conv(s) to `head_channels`, then a 1x1 predictor."""
    layers = [_conv(in_channels, head_channels, norm, separable)]
    if not separable:
        layers.append(_conv(head_channels, head_channels, norm, False))
    predictor = Conv2d(head_channels, out_channels, kernel_size=1)
    nn.init.normal_(predictor.weight, 0, 0.001)
    nn.init.constant_(predictor.bias, 0)
    return nn.Sequential(*layers, predictor)


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deepest feature, then upsample-and-fuse with 1x1-projected shallower ones."""

    def __init__(self, input_shape: dict[str, ShapeSpec], *, project_features: list[str],
                 project_channels: list[int], aspp_channels: int, aspp_dilations: list[int],
                 aspp_dropout: float, decoder_channels: int, norm: str, separable: bool):
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.aspp_feature = ordered[-1][0]
        self.project_features = sorted(project_features, key=lambda f: input_shape[f].stride,
                                       reverse=True)  # deepest first, the order of fusing
        channels = dict(zip(project_features, project_channels))
        self.aspp = ASPP(input_shape[self.aspp_feature].channels, aspp_channels, aspp_dilations,
                         norm=norm, activation=F.relu, dropout=aspp_dropout,
                         use_depthwise_separable_conv=separable)
        self.projections = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        previous = aspp_channels
        for feature in self.project_features:
            projection = Conv2d(input_shape[feature].channels, channels[feature], 1,
                                bias=not norm, norm=get_norm(norm, channels[feature]),
                                activation=F.relu)
            weight_init.c2_xavier_fill(projection)
            self.projections[feature] = projection
            fused = channels[feature] + previous
            self.fusions[feature] = (
                _conv(fused, decoder_channels, norm, True) if separable else
                nn.Sequential(_conv(fused, decoder_channels, norm, False),
                              _conv(decoder_channels, decoder_channels, norm, False)))
            previous = decoder_channels
        self.out_channels = previous

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        y = self.aspp(features[self.aspp_feature])
        for feature in self.project_features:
            projected = self.projections[feature](features[feature])
            y = F.interpolate(y, size=projected.shape[-2:], mode="bilinear", align_corners=False)
            y = self.fusions[feature](torch.cat([projected, y], dim=1))
        return y


def _branch_args(cfg: CfgNode, head: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
    """What both branches read from their config node: input features, decoder, head width."""
    return {
        "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
        "decoder": {
            "project_features": list(head.PROJECT_FEATURES),
            "project_channels": list(head.PROJECT_CHANNELS),
            "aspp_channels": head.ASPP_CHANNELS, "aspp_dilations": list(head.ASPP_DILATIONS),
            "aspp_dropout": head.ASPP_DROPOUT, "decoder_channels": head.CONVS_DIM,
            "norm": head.NORM,
            "separable": cfg.MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV,
        },
        "head_channels": head.HEAD_CHANNELS,
        "common_stride": head.COMMON_STRIDE,
    }


def deeplab_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                          weights: torch.Tensor | None, top_k: float,
                          ignore_label: int) -> torch.Tensor:
    """Per-pixel cross-entropy (x weights), averaged over the `top_k` fraction of the largest
    pixel losses (hard-pixel mining, paper sec. 3.4; 1.0 averages every pixel)."""
    losses = F.cross_entropy(logits, labels, ignore_index=ignore_label, reduction="none")
    if weights is not None:
        losses = losses * weights
    losses = losses.flatten()
    if top_k < 1.0:
        losses = torch.topk(losses, max(int(top_k * losses.numel()), 1)).values
    return losses.mean()


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of `losses * weights` over the weight mass (0 when nothing is labelled)."""
    total = weights.sum()
    weighted = (losses * weights).sum()
    return weighted / total if total > 0 else weighted * 0


@SEM_SEG_HEADS_REGISTRY.register()
class PanopticDeepLabSemSegHead(nn.Module):
    """Semantic branch: DeepLabV3+ decoder + head, logits at full input resolution."""

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, decoder: dict, head_channels: int,
                 num_classes: int, common_stride: int, ignore_label: int, loss_type: str,
                 loss_top_k: float, loss_weight: float):
        """
        Args:
            input_shape: backbone features this branch reads.
            decoder: DeepLabV3PlusDecoder keyword arguments.
            head_channels, num_classes: prediction head width and outputs.
            common_stride: stride of the predictions before the final upsampling (4).
            ignore_label: label of VOID pixels.
            loss_type: "hard_pixel_mining" (keeps `loss_top_k` of the pixels) or "cross_entropy".
            loss_weight: multiplies the loss.
        """
        super().__init__()
        if loss_type not in ("hard_pixel_mining", "cross_entropy"):
            raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_TYPE {loss_type!r} is not "
                             "'hard_pixel_mining' or 'cross_entropy'")
        self.decoder = DeepLabV3PlusDecoder(input_shape, **decoder)
        self.head = _head(self.decoder.out_channels, head_channels, num_classes, decoder["norm"],
                          decoder["separable"])
        self.common_stride = common_stride
        self.ignore_label = ignore_label
        self.loss_top_k = loss_top_k if loss_type == "hard_pixel_mining" else 1.0
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            **_branch_args(cfg, head, input_shape), "num_classes": head.NUM_CLASSES,
            "ignore_label": head.IGNORE_VALUE, "loss_type": head.LOSS_TYPE,
            "loss_top_k": head.LOSS_TOP_K, "loss_weight": head.LOSS_WEIGHT,
        }

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.head(self.decoder(features))
        return F.interpolate(logits, scale_factor=self.common_stride, mode="bilinear",
                             align_corners=False)

    def losses(self, logits: torch.Tensor, targets: torch.Tensor,
               weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
        loss = deeplab_cross_entropy(logits, targets, weights, self.loss_top_k,
                                     self.ignore_label)
        return {"loss_sem_seg": loss * self.loss_weight}


@INS_EMBED_BRANCHES_REGISTRY.register()
class PanopticDeepLabInsEmbedHead(nn.Module):
    """Instance branch: DeepLabV3+ decoder with a centre head (1 ch) and an offset head (2 ch)."""

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, decoder: dict, head_channels: int,
                 common_stride: int, center_loss_weight: float, offset_loss_weight: float):
        super().__init__()
        self.decoder = DeepLabV3PlusDecoder(input_shape, **decoder)
        args = (self.decoder.out_channels, head_channels)
        self.center_head = _head(*args, 1, decoder["norm"], decoder["separable"])
        self.offset_head = _head(*args, 2, decoder["norm"], decoder["separable"])
        self.common_stride = common_stride
        self.center_loss_weight = center_loss_weight
        self.offset_loss_weight = offset_loss_weight

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.INS_EMBED_HEAD
        return {
            **_branch_args(cfg, head, input_shape),
            "center_loss_weight": head.CENTER_LOSS_WEIGHT,
            "offset_loss_weight": head.OFFSET_LOSS_WEIGHT,
        }

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre heatmap (N, 1, H, W) and offsets (N, 2, H, W) in input pixels."""
        y = self.decoder(features)
        scale = self.common_stride
        center = F.interpolate(self.center_head(y), scale_factor=scale, mode="bilinear",
                               align_corners=False)
        offset = F.interpolate(self.offset_head(y), scale_factor=scale, mode="bilinear",
                               align_corners=False) * scale
        return center, offset

    def losses(self, center, offset, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        center_loss = weighted_mean(F.mse_loss(center, targets["center"], reduction="none"),
                                    targets["center_weights"][:, None])
        offset_loss = weighted_mean(F.l1_loss(offset, targets["offset"], reduction="none"),
                                    targets["offset_weights"][:, None])
        return {"loss_center": center_loss * self.center_loss_weight,
                "loss_offset": offset_loss * self.offset_loss_weight}


def build_ins_embed_branch(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    return INS_EMBED_BRANCHES_REGISTRY.get(cfg.MODEL.INS_EMBED_HEAD.NAME)(cfg, input_shape)


_TARGET_PADDING = {"sem_seg": None, "sem_seg_weights": 0, "center": 0, "offset": 0,
                   "center_weights": 0, "offset_weights": 0}  # None: the ignore label


@META_ARCH_REGISTRY.register()
class PanopticDeepLab(nn.Module):
    """Backbone + semantic branch + instance branch; outputs `sem_seg`, `panoptic_seg` (ids
    `class * label_divisor + instance`, VOID -1, segments_info None) and `instances`."""

    @configurable
    def __init__(self, *, backbone: nn.Module, sem_seg_head: nn.Module,
                 ins_embed_head: nn.Module, pixel_mean: list[float], pixel_std: list[float],
                 thing_ids: list[int], label_divisor: int, stuff_area: int,
                 center_threshold: float, nms_kernel: int, top_k: int,
                 predict_instances: bool, size_divisibility: int, chunk_size: int):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.register_buffer("thing_ids", torch.tensor(thing_ids, dtype=torch.long), False)
        self.label_divisor = label_divisor
        self.stuff_area = stuff_area
        self.center_threshold = center_threshold
        self.nms_kernel = nms_kernel
        self.top_k = top_k
        self.predict_instances = predict_instances
        self.size_divisibility = (size_divisibility if size_divisibility > 0
                                  else backbone.size_divisibility)
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        pdl = cfg.MODEL.PANOPTIC_DEEPLAB
        dataset = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else cfg.DATASETS.TEST[0]
        metadata = MetadataCatalog.get(dataset)
        if not metadata.get("thing_dataset_id_to_contiguous_id"):
            raise KeyError(f"PanopticDeepLab needs thing classes: the metadata of dataset "
                           f"{dataset!r} has no thing_dataset_id_to_contiguous_id")
        return {
            "backbone": backbone,
            "sem_seg_head": SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, shapes),
            "ins_embed_head": build_ins_embed_branch(cfg, shapes),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
            "thing_ids": sorted(metadata.get("thing_dataset_id_to_contiguous_id", {}).values()),
            "label_divisor": metadata.get("label_divisor", 1000),
            "stuff_area": pdl.STUFF_AREA, "center_threshold": pdl.CENTER_THRESHOLD,
            "nms_kernel": pdl.NMS_KERNEL, "top_k": pdl.TOP_K_INSTANCE,
            "predict_instances": pdl.PREDICT_INSTANCES,
            "size_divisibility": pdl.SIZE_DIVISIBILITY, "chunk_size": pdl.GROUPING_CHUNK_SIZE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        features = self.backbone(images.tensor)
        sem_logits = self.sem_seg_head(features)
        center, offset = self.ins_embed_head(features)
        if self.training:
            targets = {
                key: ImageList.from_tensors(
                    [x[key].to(self.device) for x in batched_inputs], self.size_divisibility,
                    pad_value=self.sem_seg_head.ignore_label if pad is None else pad).tensor
                for key, pad in _TARGET_PADDING.items()
            }
            losses = self.sem_seg_head.losses(sem_logits, targets["sem_seg"],
                                              targets["sem_seg_weights"])
            losses.update(self.ins_embed_head.losses(center, offset, targets))
            return losses
        return [self._inference(sem_logits[i], center[i], offset[i], image_size, inputs)
                for i, (image_size, inputs) in enumerate(zip(images.image_sizes, batched_inputs))]

    def _inference(self, sem_logits, center, offset, image_size, inputs) -> dict:
        height = inputs.get("height", image_size[0])
        width = inputs.get("width", image_size[1])
        sem_logits = sem_seg_postprocess(sem_logits, image_size, height, width)
        center = sem_seg_postprocess(center, image_size, height, width)
        offset = sem_seg_postprocess(offset, image_size, height, width)
        offset = offset * offset.new_tensor([height / image_size[0], width / image_size[1]]
                                            ).view(2, 1, 1)  # into output pixels
        sem_seg = sem_logits.argmax(dim=0)
        panoptic, _ = panoptic_deeplab_inference(
            sem_seg, center, offset, thing_ids=self.thing_ids, label_divisor=self.label_divisor,
            stuff_area=self.stuff_area, threshold=self.center_threshold,
            nms_kernel=self.nms_kernel, top_k=self.top_k, chunk_size=self.chunk_size)
        result = {"sem_seg": sem_logits, "panoptic_seg": (panoptic, None)}
        if self.predict_instances:
            result["instances"] = self._instances(panoptic, sem_logits.softmax(dim=0), center[0])
        return result

    def _instances(self, panoptic: torch.Tensor, probabilities: torch.Tensor,
                   heatmap: torch.Tensor) -> Instances:
        """One instance per thing segment; score = mean class probability over the mask x the
        centre heatmap at the mask's centroid (the reference's instance score)."""
        thing_ids = set(self.thing_ids.tolist())
        labels = [v for v in torch.unique(panoptic).tolist()
                  if v >= 0 and v // self.label_divisor in thing_ids]
        instances = Instances(panoptic.shape)
        masks = torch.stack([panoptic == v for v in labels]) if labels else torch.zeros(
            0, *panoptic.shape, dtype=torch.bool, device=panoptic.device)
        classes = torch.tensor([v // self.label_divisor for v in labels], dtype=torch.long,
                               device=panoptic.device)
        scores = []
        for mask, category in zip(masks, classes):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            semantic_score = probabilities[category][mask].mean()
            center_score = heatmap[int(ys.float().mean()), int(xs.float().mean())]
            scores.append(semantic_score * center_score)
        instances.pred_masks = masks
        instances.pred_classes = classes
        instances.scores = torch.stack(scores) if scores else torch.zeros(0, device=panoptic.device)
        instances.pred_boxes = BitMasks(masks).get_bounding_boxes()
        return instances
