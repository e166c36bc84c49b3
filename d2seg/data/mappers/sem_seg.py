"""Training mapper of the semantic heads: MMSegmentation's Cityscapes / ADE20K pipeline
(mmseg configs/_base_/datasets/cityscapes.py) in Detectron2's transforms.

Steps (training): 1. resize by a random ratio in INPUT.SEM_SEG_RATIO_RANGE of the scale
INPUT.SEM_SEG_SCALE (w, h), keeping the aspect ratio (`RandomResize`; Detectron2's
`ResizeScale`), or Detectron2's shortest-edge resize when SEM_SEG_SCALE is empty; 2. crop
INPUT.CROP.SIZE where no class covers more than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA (0.75,
`cat_max_ratio`; Detectron2's `RandomCrop_CategoryAreaConstraint`); 3. horizontal flip
(INPUT.RANDOM_FLIP); 4. with INPUT.PHOTOMETRIC_DISTORTION, each with probability 0.5: brightness
x U(0.875, 1.125) (MMSeg adds U(-32, 32), the same at mid-grey 128), contrast and saturation
x U(0.5, 1.5) (`PhotoMetricDistortion`; its hue jitter is left out). Inference: Detectron2's
mapper (shortest-edge resize to MIN_SIZE_TEST).
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.data import transforms as T

from d2seg.config import register_config
from d2seg.data.mappers.base import D2SegDatasetMapper
from d2seg.data.mappers.build import register_mapper
from d2seg.data.panoptic_utils import VOID_LABEL


@register_config(
    "INPUT.SEM_SEG_SCALE",
    "INPUT.SEM_SEG_RATIO_RANGE",
    "INPUT.PHOTOMETRIC_DISTORTION",
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
)
def add_sem_seg_mapper_config(cfg: CfgNode) -> None:
    """The semantic training mapper: MMSegmentation's RandomResize scale (w, h) and ratio range
    ((): Detectron2's MIN_SIZE_TRAIN resize), photometric distortion and crop constraint."""
    cfg.INPUT.SEM_SEG_SCALE = ()  # Cityscapes (2048, 1024), ADE20K (2048, 512)
    cfg.INPUT.SEM_SEG_RATIO_RANGE = (0.5, 2.0)  # MMSeg RandomResize ratio_range
    cfg.INPUT.PHOTOMETRIC_DISTORTION = False  # brightness / contrast / saturation jitter
    # Largest fraction of the crop one class may cover (MMSeg cat_max_ratio 0.75; 1.0: off), the
    # name Detectron2's DeepLab project gives it.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0


PHOTOMETRIC_PROBABILITY = 0.5  # PhotoMetricDistortion applies each change with probability 0.5
BRIGHTNESS_RANGE = (0.875, 1.125)  # +-32 of 255 at mid-grey, as a multiplier
CONTRAST_RANGE = (0.5, 1.5)  # PhotoMetricDistortion contrast_range
SATURATION_RANGE = (0.5, 1.5)  # PhotoMetricDistortion saturation_range


def build_sem_seg_train_augmentation(cfg: CfgNode) -> list[T.Augmentation]:
    """The training augmentations listed in the module docstring, from INPUT.* keys."""
    inp = cfg.INPUT
    if inp.SEM_SEG_SCALE:
        if len(inp.SEM_SEG_SCALE) != 2 or len(inp.SEM_SEG_RATIO_RANGE) != 2:
            raise ValueError(
                f"INPUT.SEM_SEG_SCALE {inp.SEM_SEG_SCALE} must be (w, h) and "
                f"INPUT.SEM_SEG_RATIO_RANGE {inp.SEM_SEG_RATIO_RANGE} (low, high)"
            )
        width, height = inp.SEM_SEG_SCALE
        low, high = inp.SEM_SEG_RATIO_RANGE
        augs = [T.ResizeScale(low, high, height, width)]
    else:
        augs = [
            T.ResizeShortestEdge(
                inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING
            )
        ]
    if inp.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                inp.CROP.TYPE, inp.CROP.SIZE, inp.CROP.SINGLE_CATEGORY_MAX_AREA, VOID_LABEL
            )
        )
    if inp.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=inp.RANDOM_FLIP == "horizontal", vertical=inp.RANDOM_FLIP == "vertical"
            )
        )
    if inp.PHOTOMETRIC_DISTORTION:
        augs += [
            T.RandomApply(aug, PHOTOMETRIC_PROBABILITY)
            for aug in (
                T.RandomBrightness(*BRIGHTNESS_RANGE),
                T.RandomContrast(*CONTRAST_RANGE),
                T.RandomSaturation(*SATURATION_RANGE),
            )
        ]
    return augs


@register_mapper("D2SegSemanticSegmentor")
class SemSegDatasetMapper(D2SegDatasetMapper):
    """Detectron2's mapper (image + `sem_seg`) with the training augmentations above."""

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        args = super().from_config(cfg, is_train)
        if is_train:
            args["augmentations"] = build_sem_seg_train_augmentation(cfg)
        return args
