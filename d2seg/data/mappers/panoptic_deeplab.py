"""Dataset mapper that adds Panoptic-DeepLab's training targets."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from d2seg.data.mappers import register_mapper
from d2seg.data.mappers.base import files_named_on_error
from d2seg.data.panoptic_utils import rgb_to_id
from d2seg.data.targets.panoptic_deeplab import PanopticDeepLabTargetGenerator


@register_mapper("PanopticDeepLab")
class PanopticDeepLabDatasetMapper:
    """Steps, for one record of a "standard" panoptic dataset (`pan_seg_file_name`,
    `segments_info` with contiguous category ids):

    1. read the image and the panoptic PNG (errors name the file);
    2. apply the same augmentations to both (resize, crop, flip; the panoptic map as a
       segmentation, so it is resized with nearest neighbour);
    3. in training, build the targets with :class:`PanopticDeepLabTargetGenerator` on the
       augmented map, so that areas and centres are measured after augmentation.
    """

    @configurable
    def __init__(self, is_train: bool, *, augmentations: list, image_format: str,
                 target_generator: PanopticDeepLabTargetGenerator | None):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.target_generator = target_generator

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        augmentations = utils.build_augmentation(cfg, is_train)  # [resize] + [flip]
        if is_train and cfg.INPUT.CROP.ENABLED:  # resize -> crop -> flip, as the reference
            augmentations.insert(1, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        generator = None
        if is_train:
            metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
            pdl = cfg.MODEL.PANOPTIC_DEEPLAB
            generator = PanopticDeepLabTargetGenerator(
                thing_ids=frozenset(metadata.thing_dataset_id_to_contiguous_id.values()),
                ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, sigma=pdl.GAUSSIAN_SIGMA,
                small_instance_area=pdl.SMALL_INSTANCE_AREA,
                small_instance_weight=pdl.SMALL_INSTANCE_WEIGHT,
                ignore_crowd_in_semantic=pdl.IGNORE_CROWD_IN_SEMANTIC,
                ignore_stuff_in_offset=pdl.IGNORE_STUFF_IN_OFFSET)
        return {"is_train": is_train, "augmentations": augmentations,
                "image_format": cfg.INPUT.FORMAT, "target_generator": generator}

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = dict(dataset_dict)
        with files_named_on_error(dataset_dict):
            image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
            panoptic = None
            if self.is_train:
                # kept as uint8 RGB through the augmentations (nearest-neighbour resizing works
                # on uint8 images, not on int64 id maps); ids are decoded afterwards
                panoptic = utils.read_image(dataset_dict["pan_seg_file_name"], "RGB")
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image, sem_seg=panoptic)
        self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.is_train:
            targets = self.target_generator(rgb_to_id(aug_input.sem_seg),
                                            dataset_dict["segments_info"])
            for key, value in targets.items():
                dataset_dict[key] = torch.as_tensor(value)
        return dataset_dict
