"""Dataset mapper that adds Panoptic-DeepLab's training targets."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.projects.panoptic_deeplab.target_generator import PanopticDeepLabTargetGenerator
from panopticapi.utils import rgb2id

from d2seg.config import register_config
from d2seg.data.mappers.base import files_named_on_error
from d2seg.data.mappers.build import register_mapper
from d2seg.data.panoptic_utils import check_panoptic_segments


@register_config(
    "INPUT.GAUSSIAN_SIGMA",
    "INPUT.SMALL_INSTANCE_AREA",
    "INPUT.SMALL_INSTANCE_WEIGHT",
    "INPUT.IGNORE_CROWD_IN_SEMANTIC",
    "INPUT.IGNORE_STUFF_IN_OFFSET",
)
def add_panoptic_deeplab_mapper_config(cfg: CfgNode) -> None:
    """Panoptic-DeepLab's target generation, under INPUT with the names Detectron2's project
    gives them, so its configs' values carry over."""
    cfg.INPUT.GAUSSIAN_SIGMA = 8.0  # centre heatmap Gaussian (paper sec. 3.2; project: 10)
    cfg.INPUT.SMALL_INSTANCE_AREA = 4096  # instances below 64 x 64 pixels (strict <) get ...
    cfg.INPUT.SMALL_INSTANCE_WEIGHT = 3  # ... this semantic loss weight (an integer there)
    cfg.INPUT.IGNORE_CROWD_IN_SEMANTIC = False  # crowd pixels keep their semantic label
    cfg.INPUT.IGNORE_STUFF_IN_OFFSET = True  # offsets are learnt on thing pixels only


def build_target_generator(cfg: CfgNode, dataset_name: str) -> PanopticDeepLabTargetGenerator:
    """Detectron2's Panoptic-DeepLab target generator (the authors' targets: semantic labels and
    weights, Gaussian centre heatmap, offsets, centre / offset weights) from INPUT.* keys and
    the dataset's metadata."""
    metadata = MetadataCatalog.get(dataset_name)
    return PanopticDeepLabTargetGenerator(
        ignore_label=metadata.get("ignore_label", 255),
        thing_ids=list(metadata.thing_dataset_id_to_contiguous_id.values()),
        sigma=cfg.INPUT.GAUSSIAN_SIGMA,
        ignore_stuff_in_offset=cfg.INPUT.IGNORE_STUFF_IN_OFFSET,
        small_instance_area=cfg.INPUT.SMALL_INSTANCE_AREA,
        small_instance_weight=cfg.INPUT.SMALL_INSTANCE_WEIGHT,
        ignore_crowd_in_semantic=cfg.INPUT.IGNORE_CROWD_IN_SEMANTIC,
    )


@register_mapper("D2SegPanopticDeepLab")
class PanopticDeepLabDatasetMapper:
    """Steps, for one record of a "standard" panoptic dataset (`pan_seg_file_name`,
    `segments_info` with contiguous category ids):

    1. read the image and the panoptic PNG (errors name the file);
    2. apply the same augmentations to both (resize, crop, flip; the panoptic map as a
       segmentation, so it is resized with nearest neighbour);
    3. in training, build the targets with Detectron2's `PanopticDeepLabTargetGenerator` on the
       augmented map, so that areas and centres are measured after augmentation.

    Unlike the project's mapper it also serves inference, honours INPUT.RANDOM_FLIP and names
    the file it cannot read.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        target_generator: PanopticDeepLabTargetGenerator | None,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.target_generator = target_generator

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        augmentations = utils.build_augmentation(cfg, is_train)  # [resize] + [flip]
        if is_train and cfg.INPUT.CROP.ENABLED:  # resize -> crop -> flip, as the reference
            augmentations.insert(1, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        generator = build_target_generator(cfg, cfg.DATASETS.TRAIN[0]) if is_train else None
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "target_generator": generator,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = dict(dataset_dict)
        with files_named_on_error(dataset_dict):
            image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
            panoptic = None
            if self.is_train:
                # kept as uint8 RGB through the augmentations (nearest-neighbour resizing works
                # on uint8 images, not on int64 id maps); ids are decoded afterwards
                panoptic = utils.read_image(dataset_dict["pan_seg_file_name"], "RGB")
                check_panoptic_segments(
                    rgb2id(panoptic),
                    dataset_dict["segments_info"],
                    dataset_dict["pan_seg_file_name"],
                )
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image, sem_seg=panoptic)
        self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.is_train:
            targets = self.target_generator(
                rgb2id(aug_input.sem_seg), dataset_dict["segments_info"]
            )
            targets.pop("center_points")
            dataset_dict.update(targets)
        return dataset_dict
