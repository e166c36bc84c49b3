"""The base of d2seg's semantic decode heads, as MMSegmentation's `BaseDecodeHead`
(mmseg/models/decode_heads/decode_head.py): a head computes a CONVS_DIM-channel map from the
backbone features (`layers`), then Dropout2d(0.1) and a 1x1 classifier; the logits are resized
bilinearly to the input resolution. Training adds cross-entropy with ignore 255, optionally
per-class weights and pixel OHEM (`OHEMPixelSampler`), and the auxiliary FCN heads of
MODEL.SEM_SEG_HEAD.AUX (MMSegmentation's R-50-D8 configs: one, on res4, one 3x3 conv to 256
channels, loss weight 0.4).

Subclasses register in Detectron2's SEM_SEG_HEADS_REGISTRY and run inside Detectron2's
`SemanticSegmentor` (or d2seg's `D2SegSemanticSegmentor`, which adds sliding-window inference
and test-time augmentation). A head's own keys live in its sub-node of MODEL.SEM_SEG_HEAD,
declared in its file with :func:`sem_seg_head_config` and named in its `config_nodes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from d2seg.config import register_config

AUX_HEAD_DEFAULTS = {
    "IN_FEATURE": "res4",  # backbone feature the auxiliary FCN head reads (MMSeg: res4)
    "CHANNELS": 256,  # width of its convs (MMSeg auxiliary_head channels)
    "NUM_CONVS": 1,  # its k x k convs (MMSeg auxiliary_head num_convs)
    "KERNEL_SIZE": 3,  # their kernel (MMSeg HRNet OCR / FCN cascade: 1)
    "LOSS_WEIGHT": 0.4,  # weight of its cross-entropy (MMSeg auxiliary_head loss_weight)
}
"""Keys of one entry of MODEL.SEM_SEG_HEAD.AUX; an entry may leave any of them out."""


@dataclasses.dataclass(frozen=True)
class AuxHeadSpec:
    """One auxiliary FCN head: `num_convs` k x k conv-norm-ReLU from `in_feature`
    (`in_channels`) to `channels`, a classifier, and its loss weight."""

    in_feature: str
    in_channels: int
    channels: int
    num_convs: int = 1
    kernel_size: int = 3
    loss_weight: float = 0.4


def aux_head_entries(cfg: CfgNode) -> list[dict]:
    """MODEL.SEM_SEG_HEAD.AUX with every entry completed from :data:`AUX_HEAD_DEFAULTS`;
    ValueError naming the entry and key for anything else."""
    aux = cfg.MODEL.SEM_SEG_HEAD.AUX
    if not isinstance(aux, (list, tuple)):
        raise ValueError(f"MODEL.SEM_SEG_HEAD.AUX must be a list of auxiliary heads, not {aux!r}")
    entries = []
    for index, entry in enumerate(aux):
        where = f"MODEL.SEM_SEG_HEAD.AUX[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where} must be a mapping of {sorted(AUX_HEAD_DEFAULTS)}, not {entry!r}"
            )
        unknown = sorted(set(entry) - set(AUX_HEAD_DEFAULTS))
        if unknown:
            raise ValueError(
                f"{where} has unknown keys {unknown}; known: {sorted(AUX_HEAD_DEFAULTS)}"
            )
        for key, value in entry.items():
            expected = type(AUX_HEAD_DEFAULTS[key])
            if not isinstance(value, (int, float) if expected is float else expected):
                raise ValueError(f"{where}.{key} must be a {expected.__name__}, not {value!r}")
        entries.append(AUX_HEAD_DEFAULTS | dict(entry))
    return entries


def _check_sem_seg_head_config(cfg: CfgNode) -> None:
    aux_head_entries(cfg)


@register_config("MODEL.SEM_SEG_HEAD", check=_check_sem_seg_head_config)
def add_decode_head_config(cfg: CfgNode) -> None:
    """Keys every decode head reads, MMSegmentation's defaults (`BaseDecodeHead`, the
    `configs/_base_/models/*_r50-d8.py` model files, `OHEMPixelSampler`). Head width is
    Detectron2's CONVS_DIM (MMSegmentation's `channels`, 512 in its R-50-D8 configs)."""
    sem = cfg.MODEL.SEM_SEG_HEAD
    sem.DROPOUT = 0.1  # Dropout2d before the 1x1 classifier (BaseDecodeHead dropout_ratio)
    sem.ALIGN_CORNERS = False  # bilinear resizes of logits and pyramids (MMSeg configs: False)
    # auxiliary FCN heads, each a mapping of AUX_HEAD_DEFAULTS' keys ([]: none)
    sem.AUX = []
    sem.OHEM = False  # online hard example mining of pixels (MMSeg OHEMPixelSampler)
    sem.OHEM_THRESH = 0.7  # keep pixels whose true-class prob < this (< 0: hardest by loss)
    sem.OHEM_MIN_KEPT = 100000  # keep at least this many pixels per image (MMSeg ohem configs)
    sem.CLASS_WEIGHTS = []  # cross-entropy weight per class ([]: all 1)
    sem.AVG_NON_IGNORE = False  # average the loss over labelled pixels only (MMSeg: all pixels)


def _config_nodes(head_name: str) -> tuple[str, ...]:
    try:
        return getattr(SEM_SEG_HEADS_REGISTRY.get(head_name), "config_nodes", ())
    except KeyError:  # an unknown head fails when the model is built, naming the registry
        return ()


def sem_seg_head_config(node_name: str) -> Callable[[Callable[[CfgNode], None]], Callable]:
    """Decorator for the function that adds the keys of MODEL.SEM_SEG_HEAD.<node_name> (it
    receives the new node); the node is read by the heads that list it in `config_nodes`, and
    a config that sets it for another head fails at load (d2seg.config.check_config)."""
    path = f"MODEL.SEM_SEG_HEAD.{node_name}"

    def unread_reason(cfg: CfgNode) -> str | None:
        name = cfg.MODEL.SEM_SEG_HEAD.NAME
        if node_name in _config_nodes(name):
            return None
        readers = sorted(n for n, head in SEM_SEG_HEADS_REGISTRY if node_name in _config_nodes(n))
        return f"MODEL.SEM_SEG_HEAD.NAME is {name!r}; {path} is read by {', '.join(readers)}"

    def register(add_node_keys: Callable[[CfgNode], None]) -> Callable[[CfgNode], None]:
        def add_keys(cfg: CfgNode) -> None:
            cfg.MODEL.SEM_SEG_HEAD[node_name] = CfgNode()
            add_node_keys(cfg.MODEL.SEM_SEG_HEAD[node_name])

        add_keys.__module__, add_keys.__qualname__ = (
            add_node_keys.__module__,
            add_node_keys.__qualname__,
        )
        register_config(path, unread_reason=unread_reason)(add_keys)
        return add_node_keys

    return register


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


def aux_loss_name(index: int) -> str:
    """The loss key of auxiliary head `index`."""
    return "loss_sem_seg_aux" + (str(index) if index else "")


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
            raise ValueError(f"an FCN head needs num_convs >= 1, not {num_convs}")
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
        aux_heads: the auxiliary FCN heads (MODEL.SEM_SEG_HEAD.AUX).
        class_weights: cross-entropy weight per class (None: all 1).
        ohem_thresh / ohem_min_kept: pixel OHEM (min_kept None: off; thresh None: by loss).
        avg_non_ignore: average the loss over labelled pixels only.
    """

    has_classifier = True  # False: the subclass builds its own `classifier` or overrides predict
    # sub-nodes of MODEL.SEM_SEG_HEAD the head reads (each declared by sem_seg_head_config)
    config_nodes: tuple[str, ...] = ()

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
        aux_heads: tuple[AuxHeadSpec, ...] | list[AuxHeadSpec] = (),
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
        self.aux_specs = list(aux_heads)
        self.aux_heads = nn.ModuleList(
            nn.Sequential(
                FCNConvs(
                    spec.in_channels,
                    spec.channels,
                    spec.num_convs,
                    False,
                    norm,
                    kernel_size=spec.kernel_size,
                ),
                Classifier(spec.channels, num_classes, dropout),
            )
            for spec in self.aux_specs
        )

    @classmethod
    def base_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        """The keyword arguments every head takes, from MODEL.SEM_SEG_HEAD."""
        sem = cfg.MODEL.SEM_SEG_HEAD
        aux = aux_head_entries(cfg)
        missing = [
            f for f in [*sem.IN_FEATURES, *(a["IN_FEATURE"] for a in aux)] if f not in input_shape
        ]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES / AUX IN_FEATURE name {missing}, which the "
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
            "aux_heads": [
                AuxHeadSpec(
                    in_feature=a["IN_FEATURE"],
                    in_channels=input_shape[a["IN_FEATURE"]].channels,
                    channels=a["CHANNELS"],
                    num_convs=a["NUM_CONVS"],
                    kernel_size=a["KERNEL_SIZE"],
                    loss_weight=a["LOSS_WEIGHT"],
                )
                for a in aux
            ],
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

    def aux_logits(self, features: dict[str, Tensor], index: int) -> Tensor:
        """Class logits of auxiliary head `index` at its input feature's resolution."""
        return self.aux_heads[index](features[self.aux_specs[index].in_feature])

    def aux_losses(
        self,
        features: dict[str, Tensor],
        targets: Tensor,
        known_logits: dict[int, Tensor] | None = None,
    ) -> dict:
        """One loss per auxiliary head (x its LOSS_WEIGHT): `loss_sem_seg_aux` for the first,
        `loss_sem_seg_aux1`, `loss_sem_seg_aux2`, ... for the others. `known_logits` holds the
        logits of heads the caller has already run, by index."""
        known_logits = known_logits or {}
        losses = {}
        for index, spec in enumerate(self.aux_specs):
            logits = known_logits.get(index)
            if logits is None:
                logits = self.aux_logits(features, index)
            losses[aux_loss_name(index)] = self.loss(logits, targets) * spec.loss_weight
        return losses

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict]:
        """Detectron2's semantic-head interface: (None, losses) in training, else (logits at the
        input resolution, {})."""
        if self.training:
            return None, self.losses(features, targets)
        logits = self.predict(features)
        return resize(logits, self.output_size(features), self.align_corners), {}
