"""The base of d2seg's semantic decode heads, as MMSegmentation's `BaseDecodeHead`
(mmseg/models/decode_heads/decode_head.py): a head computes a CONVS_DIM-channel map from the
backbone features (`layers`), then Dropout2d(0.1) and a 1x1 classifier; the logits are resized
bilinearly to the input resolution. Training adds cross-entropy with ignore 255, optionally
per-class weights and pixel OHEM (`OHEMPixelSampler`), and optionally the auxiliary FCN head on
res4 (one 3x3 conv to 256 channels, loss weight 0.4) of MMSegmentation's R-50-D8 configs.

Subclasses register in Detectron2's SEM_SEG_HEADS_REGISTRY and run inside Detectron2's
`SemanticSegmentor` (or d2seg's `D2SegSemanticSegmentor`, which adds sliding-window inference
and test-time augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import Tensor, nn


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    norm: str,
    dilation: int = 1,
) -> Conv2d:
    """MMSegmentation's `ConvModule`: conv ("same" padding, bias only without a norm), norm,
    ReLU."""
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=dilation * (kernel_size // 2),
        dilation=dilation,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )


def key_projection(in_channels: int, key_channels: int, norm: str) -> nn.Sequential:
    """Two 1x1 conv-norm-ReLU, as the query / key projections of MMSegmentation's
    `SelfAttentionBlock` with `key_query_num_convs=2` (OCRNet, ISANet)."""
    return nn.Sequential(
        conv_norm_relu(in_channels, key_channels, 1, norm),
        conv_norm_relu(key_channels, key_channels, 1, norm),
    )


def resize(x: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool) -> Tensor:
    """Bilinear resize of a (N, C, H, W) map; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def ohem_pixel_weights(
    logits: Tensor, targets: Tensor, ignore_value: int, thresh: float | None, min_kept: int
) -> Tensor:
    """MMSegmentation's `OHEMPixelSampler`: a 0/1 weight per pixel of `targets` (N, H, W).

    With `thresh`, labelled pixels whose probability of the true class is below
    max(thresh, the (min_kept x N)-th smallest such probability) are kept (strict <); without
    it the min_kept x N labelled pixels of highest cross-entropy are kept.
    """
    with torch.no_grad():
        valid = targets != ignore_value
        weights = logits.new_zeros(targets.shape)
        batch_kept = min_kept * targets.shape[0]
        safe_targets = targets.clone()
        safe_targets[~valid] = 0
        if thresh is not None:
            prob = F.softmax(logits, dim=1).gather(1, safe_targets.unsqueeze(1)).squeeze(1)
            valid_prob = prob[valid]
            if valid_prob.numel() > 0:
                sorted_prob = valid_prob.sort().values
                floor = float(sorted_prob[min(batch_kept, sorted_prob.numel() - 1)])
            else:
                floor = 0.0
            weights[valid] = (valid_prob < max(floor, thresh)).to(weights.dtype)
        else:
            losses = F.cross_entropy(logits, safe_targets, reduction="none")[valid]
            kept = torch.zeros_like(losses)
            kept[losses.sort(descending=True).indices[:batch_kept]] = 1.0
            weights[valid] = kept
    return weights


def sem_seg_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int = 255,
    align_corners: bool = False,
    class_weights: Tensor | None = None,
    ohem_thresh: float | None = None,
    ohem_min_kept: int | None = None,
    avg_non_ignore: bool = False,
) -> Tensor:
    """Cross-entropy of `logits` (N, K, h, w), resized to `targets` (N, H, W), as MMSegmentation's
    `CrossEntropyLoss`: per-pixel loss (class-weighted), times the OHEM weight when
    `ohem_min_kept` is set, averaged over all N x H x W pixels, or over the labelled ones with
    `avg_non_ignore`. Ignored pixels contribute 0."""
    logits = resize(logits, targets.shape[-2:], align_corners)
    targets = targets.long()
    loss = F.cross_entropy(
        logits, targets, weight=class_weights, ignore_index=ignore_value, reduction="none"
    )
    if ohem_min_kept is not None:
        loss = loss * ohem_pixel_weights(logits, targets, ignore_value, ohem_thresh, ohem_min_kept)
    if avg_non_ignore:
        return loss.sum() / (targets != ignore_value).sum().clamp(min=1)
    return loss.mean()


class FCNConvs(nn.Module):
    """MMSegmentation's `FCNHead` body: `num_convs` k x k convs to `channels` (k =
    `kernel_size`, 3 there by default), then, with `concat_input`, a k x k conv over [input,
    conv output]."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_convs: int,
        concat_input: bool,
        norm: str,
        dilation: int = 1,
        kernel_size: int = 3,
    ):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.FCN_NUM_CONVS must be >= 1, not {num_convs}")
        self.convs = nn.Sequential(
            *[
                conv_norm_relu(
                    in_channels if i == 0 else channels, channels, kernel_size, norm, dilation
                )
                for i in range(num_convs)
            ]
        )
        self.conv_cat = (
            conv_norm_relu(in_channels + channels, channels, kernel_size, norm)
            if concat_input
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.convs(x)
        if self.conv_cat is not None:
            y = self.conv_cat(torch.cat([x, y], dim=1))
        return y


class Classifier(nn.Module):
    """Dropout2d then a 1x1 conv to the class logits (`BaseDecodeHead.cls_seg`)."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)  # BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.dropout(x))


class DecodeHead(nn.Module):
    """Base semantic head. Subclasses build their layers in `__init__` from keyword arguments
    that their `from_config` adds to :meth:`base_config`, and implement `layers(features)`,
    which returns the CONVS_DIM-channel map the classifier reads.

    Args:
        input_shape: backbone features the head reads, by name (IN_FEATURES).
        num_classes: classes of the classifier.
        channels: width of the map `layers` returns (MMSegmentation `channels`).
        norm: norm of every conv ("BN", "SyncBN", "GN", "").
        ignore_value: target value left out of the loss.
        loss_weight: weight of the main cross-entropy.
        dropout: Dropout2d rate before the classifier.
        align_corners: of every bilinear resize.
        aux_feature / aux_channels / aux_loss_weight / aux_kernel_size: the auxiliary FCN head
            (None: none).
        class_weights: cross-entropy weight per class (None: all 1).
        ohem_thresh / ohem_min_kept: pixel OHEM (min_kept None: off; thresh None: by loss).
        avg_non_ignore: average the loss over labelled pixels only.
    """

    has_classifier = True  # False: the subclass builds its own `classifier` or overrides predict

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        channels: int,
        norm: str,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        dropout: float = 0.1,
        align_corners: bool = False,
        aux_feature: str | None = None,
        aux_channels: int = 256,
        aux_loss_weight: float = 0.4,
        aux_in_channels: int | None = None,
        aux_kernel_size: int = 3,
        class_weights: list[float] | None = None,
        ohem_thresh: float | None = None,
        ohem_min_kept: int | None = None,
        avg_non_ignore: bool = False,
    ):
        super().__init__()
        self.in_features = list(input_shape)
        # Logits come out at this feature's resolution (a subclass may point it elsewhere).
        self.output_feature = self.in_features[0]
        self.output_stride = input_shape[self.output_feature].stride
        self.num_classes = num_classes
        self.channels = channels
        self.dropout_ratio = dropout
        self.norm = norm
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.align_corners = align_corners
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.avg_non_ignore = avg_non_ignore
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS has {len(class_weights)} entries, "
                f"NUM_CLASSES is {num_classes}"
            )
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32),
            persistent=False,
        )
        if self.has_classifier:
            self.classifier = Classifier(channels, num_classes, dropout)
        self.aux_feature = aux_feature
        self.aux_loss_weight = aux_loss_weight
        if aux_feature is not None:
            self.aux_head = nn.Sequential(
                FCNConvs(aux_in_channels, aux_channels, 1, False, norm, 1, aux_kernel_size),
                Classifier(aux_channels, num_classes, dropout),
            )

    @classmethod
    def base_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        """The keyword arguments every head takes, from MODEL.SEM_SEG_HEAD."""
        sem = cfg.MODEL.SEM_SEG_HEAD
        missing = [
            f for f in list(sem.IN_FEATURES) + [sem.AUX_IN_FEATURE] if f and f not in input_shape
        ]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES / AUX_IN_FEATURE name {missing}, which the "
                f"backbone does not output ({sorted(input_shape)}; see MODEL.RESNETS.OUT_FEATURES)"
            )
        return {
            "input_shape": {f: input_shape[f] for f in sem.IN_FEATURES},
            "num_classes": sem.NUM_CLASSES,
            "channels": sem.CONVS_DIM,
            "norm": sem.NORM,
            "ignore_value": sem.IGNORE_VALUE,
            "loss_weight": sem.LOSS_WEIGHT,
            "dropout": sem.DROPOUT,
            "align_corners": sem.ALIGN_CORNERS,
            "aux_feature": sem.AUX_IN_FEATURE or None,
            "aux_channels": sem.AUX_CHANNELS,
            "aux_loss_weight": sem.AUX_LOSS_WEIGHT,
            "aux_kernel_size": sem.AUX_KERNEL_SIZE,
            "aux_in_channels": input_shape[sem.AUX_IN_FEATURE].channels
            if sem.AUX_IN_FEATURE
            else None,
            "class_weights": list(sem.CLASS_WEIGHTS) or None,
            "ohem_thresh": sem.OHEM_THRESH if sem.OHEM_THRESH >= 0 else None,
            "ohem_min_kept": sem.OHEM_MIN_KEPT if sem.OHEM else None,
            "avg_non_ignore": sem.AVG_NON_IGNORE,
        }

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return cls.base_config(cfg, input_shape)

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def output_size(self, features: dict[str, Tensor]) -> tuple[int, int]:
        """The input resolution: the output feature's size times its stride."""
        h, w = features[self.output_feature].shape[-2:]
        return h * self.output_stride, w * self.output_stride

    def predict(self, features: dict[str, Tensor]) -> Tensor:
        """Class logits at the output feature's resolution."""
        return self.classifier(self.layers(features))

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return sem_seg_loss(
            logits,
            targets,
            ignore_value=self.ignore_value,
            align_corners=self.align_corners,
            class_weights=self.class_weights,
            ohem_thresh=self.ohem_thresh,
            ohem_min_kept=self.ohem_min_kept,
            avg_non_ignore=self.avg_non_ignore,
        )

    def losses(self, features: dict[str, Tensor], targets: Tensor) -> dict:
        """`loss_sem_seg` (x LOSS_WEIGHT) and the auxiliary head's loss."""
        losses = {"loss_sem_seg": self.loss(self.predict(features), targets) * self.loss_weight}
        return losses | self.aux_losses(features, targets)

    def aux_losses(self, features: dict[str, Tensor], targets: Tensor) -> dict:
        """`loss_sem_seg_aux` (x AUX_LOSS_WEIGHT) with the auxiliary head, else nothing."""
        if self.aux_feature is None:
            return {}
        aux_logits = self.aux_head(features[self.aux_feature])
        return {"loss_sem_seg_aux": self.loss(aux_logits, targets) * self.aux_loss_weight}

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict]:
        """Detectron2's semantic-head interface: (None, losses) in training, else (logits at the
        input resolution, {})."""
        if self.training:
            return None, self.losses(features, targets)
        logits = self.predict(features)
        return resize(logits, self.output_size(features), self.align_corners), {}
