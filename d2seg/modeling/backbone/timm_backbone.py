"""timm models as Detectron2 backbones (`BACKBONE.NAME: build_timm_backbone`, keys under
MODEL.TIMM): MobileNetV3, Swin, HRNetV2, ResNeSt, Xception and any other timm model that has
`features_only` support, built with `pretrained=False` (weights come from MODEL.WEIGHTS; see
tools/convert_pretrained.py, which writes them under this module's `model.` prefix).

Feature names count from the deepest level, Detectron2-style: a model's last feature level is
`res5`, the one before `res4`, and so on (timm's negative `out_indices`), so a 5-level model
(MobileNetV3, HRNet, ResNeSt, Xception: stride 2 ... 32) exposes `res1`..`res5` and Swin (4
levels, stride 4 ... 32) `res2`..`res5`. Strides are the real ones, so with
MODEL.TIMM.OUTPUT_STRIDE 8 a MobileNetV3's res3..res5 all have stride 8.

Model-specific arguments, each from what MMSegmentation's backbone of that family does:
- HRNet: `feature_location=""`, the four branch outputs of the last stage (HRNetV2, Wang et al.,
  TPAMI 2020, sec. 3), not timm's classification "incre" features. MODEL.TIMM.CONCAT_FEATURE
  adds one more feature, every OUT_FEATURE resized bilinearly to the finest and concatenated
  (MMSegmentation's `input_transform="resize_concat"`, which its HRNet heads read).
- Swin: `dynamic_img_size=True` (any input size, windows padded as MMSegmentation's Swin pads
  them); its NHWC outputs are permuted to NCHW, after one LayerNorm per output with
  MODEL.TIMM.OUTPUT_NORM (MMSegmentation's `norm{i}` of `SwinTransformer.out_indices`).
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

from d2seg.config import register_config
from d2seg.modeling.sem_seg.decode_head import resize

# extra timm arguments per model family (by name prefix); see the module docstring
_FAMILY_KWARGS = {
    "hrnet": {"feature_location": ""},
    "swin_": {"dynamic_img_size": True},
}
_DEEPEST = 5  # the last feature level is named res5


def feature_index(name: str) -> int:
    """timm's (negative) out index of feature `res<k>`: res5 -> -1, res4 -> -2, ..."""
    if not (name.startswith("res") and name[3:].isdigit()):
        raise ValueError(f"MODEL.TIMM.OUT_FEATURES: {name!r} is not of the form 'res<k>'")
    return int(name[3:]) - _DEEPEST - 1


class TimmBackbone(Backbone):
    """A timm `features_only` model returning {name: NCHW map}.

    Args:
        model_name: timm model name (e.g. "mobilenetv3_large_100", "swin_tiny_patch4_window7_224").
        out_features: features to return, named res<k> (see the module docstring).
        output_stride: 8, 16 or 32 (32: timm's default, not passed); models without dilation
            support (Swin, HRNet) reject anything else.
        drop_path_rate: stochastic depth of the model (< 0: timm's default).
        output_norm: one LayerNorm per output (for NHWC models; MMSegmentation's Swin).
        concat_feature: name of an extra output, the out_features resized to the finest and
            concatenated ("": none).
        sync_bn: convert the model's BatchNorm layers to SyncBatchNorm (timm's converter: torch's
            would drop the activation of timm's BatchNormAct2d).
        align_corners: of the concatenation's bilinear resizes.
    """

    def __init__(
        self,
        model_name: str,
        out_features: list[str],
        *,
        output_stride: int = 32,
        drop_path_rate: float = -1.0,
        output_norm: bool = False,
        concat_feature: str = "",
        sync_bn: bool = False,
        align_corners: bool = False,
    ):
        super().__init__()
        try:
            import timm
        except ImportError as error:  # an optional dependency
            raise ImportError(
                "MODEL.BACKBONE.NAME 'build_timm_backbone' needs timm: pip install 'd2seg[timm]'"
            ) from error

        if output_stride not in (8, 16, 32):
            raise ValueError(f"MODEL.TIMM.OUTPUT_STRIDE must be 8, 16 or 32, not {output_stride}")
        kwargs = {"pretrained": False, "features_only": True}
        kwargs["out_indices"] = tuple(feature_index(f) for f in out_features)
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        if drop_path_rate >= 0:
            kwargs["drop_path_rate"] = drop_path_rate
        for prefix, extra in _FAMILY_KWARGS.items():
            if model_name.startswith(prefix):
                kwargs.update(extra)
        try:
            self.model = timm.create_model(model_name, **kwargs)
        except (TypeError, AssertionError, IndexError, RuntimeError) as error:
            raise ValueError(
                f"timm cannot build MODEL.TIMM.NAME {model_name!r} with OUT_FEATURES "
                f"{out_features} and OUTPUT_STRIDE {output_stride} ({type(error).__name__}: "
                f"{error})"
            ) from error
        if sync_bn:  # timm's converter keeps the activation of its fused BatchNormAct2d
            self.model = timm.layers.convert_sync_batchnorm(self.model)
        info = self.model.feature_info
        self.channels_last = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        self.output_norms = (
            nn.ModuleList(nn.LayerNorm(c) for c in info.channels()) if output_norm else None
        )
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(out_features, info.channels()))
        self._out_feature_strides = dict(zip(out_features, info.reduction()))
        self.concat_feature = concat_feature
        self.align_corners = align_corners
        if concat_feature:
            finest = min(out_features, key=self._out_feature_strides.get)
            self._out_feature_channels[concat_feature] = sum(info.channels())
            self._out_feature_strides[concat_feature] = self._out_feature_strides[finest]
            self._out_features.append(concat_feature)
        # inputs padded to a multiple of the largest nominal stride (Swin's patch merging)
        self._size_divisibility = 32

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps = self.model(x)
        if self.output_norms is not None:  # LayerNorm over channels, before the permute
            if not self.channels_last:
                maps = [m.permute(0, 2, 3, 1) for m in maps]
            maps = [norm(m) for norm, m in zip(self.output_norms, maps)]
            maps = [m.permute(0, 3, 1, 2).contiguous() for m in maps]
        elif self.channels_last:
            maps = [m.permute(0, 3, 1, 2).contiguous() for m in maps]
        names = [f for f in self._out_features if f != self.concat_feature]
        out = dict(zip(names, maps))
        if self.concat_feature:
            size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
            out[self.concat_feature] = torch.cat(
                [resize(m, size, self.align_corners) for m in maps], dim=1
            )
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(
                channels=self._out_feature_channels[f], stride=self._out_feature_strides[f]
            )
            for f in self._out_features
        }


def _unless_timm(cfg: CfgNode) -> str | None:
    name = cfg.MODEL.BACKBONE.NAME
    if name == "build_timm_backbone":
        return None
    return f"MODEL.BACKBONE.NAME is {name!r}, not 'build_timm_backbone'"


@register_config("MODEL.TIMM", unread_reason=_unless_timm)
def add_timm_backbone_config(cfg: CfgNode) -> None:
    """timm backbones (BACKBONE.NAME "build_timm_backbone"). Defaults are timm's own; configs
    set MMSegmentation's values."""
    t = cfg.MODEL.TIMM = CfgNode()
    t.NAME = ""  # timm model name, e.g. "mobilenetv3_large_100" (built with pretrained=False)
    t.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # res5 = the deepest level, res4 the next
    t.OUTPUT_STRIDE = 32  # 8 / 16 dilate the last stages (models with timm output_stride only)
    t.DROP_PATH_RATE = -1.0  # stochastic depth (< 0: timm's default; MMSeg Swin-T: 0.3)
    t.OUTPUT_NORM = False  # LayerNorm on every output (MMSeg SwinTransformer's norm{i})
    t.CONCAT_FEATURE = ""  # extra output: OUT_FEATURES resized + concatenated (HRNetV2); "": none
    t.NORM = "BN"  # "BN" (timm's BatchNorm) or "SyncBN" (converted)


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> TimmBackbone:
    """The MODEL.TIMM.* model (3-channel input only, as timm's ImageNet models)."""
    t = cfg.MODEL.TIMM
    if not t.NAME:
        raise ValueError(
            "MODEL.TIMM.NAME is empty: name a timm model, e.g. 'mobilenetv3_large_100'"
        )
    if input_shape.channels != 3:
        raise ValueError(f"build_timm_backbone reads 3-channel images, not {input_shape.channels}")
    if t.NORM not in ("BN", "SyncBN"):
        raise ValueError(f"MODEL.TIMM.NORM must be 'BN' or 'SyncBN', not {t.NORM!r}")
    return TimmBackbone(
        t.NAME,
        list(t.OUT_FEATURES),
        output_stride=t.OUTPUT_STRIDE,
        drop_path_rate=t.DROP_PATH_RATE,
        output_norm=t.OUTPUT_NORM,
        concat_feature=t.CONCAT_FEATURE,
        sync_bn=t.NORM == "SyncBN",
        align_corners=cfg.MODEL.SEM_SEG_HEAD.ALIGN_CORNERS,
    )
