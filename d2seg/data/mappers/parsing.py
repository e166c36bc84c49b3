"""Dataset mapper that adds each person's part map (`gt_parsing`) for Parsing R-CNN."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from d2seg.data.mappers.base import D2SegDatasetMapper, DatasetFileError
from d2seg.data.mappers.build import register_mapper
from d2seg.data.targets.parsing import PersonPartMaps, flip_lookup


def dataset_flip_pairs(dataset_names: list[str], remedy: str) -> list[tuple[int, int]]:
    """The `parsing_flip_pairs` the datasets share (like Detectron2's keypoint
    `flip_indices`); datasets that disagree or lack them raise a ValueError naming them, a
    missing one with `remedy` (how to run without flipping)."""
    pairs = {}
    for name in dataset_names:
        value = MetadataCatalog.get(name).get("parsing_flip_pairs")
        if value is None:
            raise ValueError(
                f"dataset {name!r} has no `parsing_flip_pairs` metadata, needed to flip its "
                f"part maps ({remedy})"
            )
        pairs[name] = sorted(tuple(int(v) for v in pair) for pair in value)
    if len({tuple(p) for p in pairs.values()}) > 1:
        raise ValueError(f"datasets disagree on parsing_flip_pairs: {pairs}")
    return next(iter(pairs.values()))


def read_part_map(path: str, height: int, width: int) -> np.ndarray:
    """A person's part map PNG as an (H, W) uint8 array; an unreadable file, a map with
    channels or one of another size raises a :class:`DatasetFileError` naming the file."""
    try:
        with Image.open(path) as image:
            part_map = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetFileError(
            f"cannot read parsing_file_name={path!r} ({type(error).__name__}: {error})"
        ) from error
    if part_map.ndim != 2 or part_map.dtype != np.uint8 or part_map.shape != (height, width):
        raise DatasetFileError(
            f"parsing_file_name={path!r}: expected an {height} x {width} single-channel uint8 "
            f"part map, got shape {part_map.shape} {part_map.dtype}"
        )
    return part_map


@register_mapper("ParsingROIHeads")
class ParsingDatasetMapper(D2SegDatasetMapper):
    """Detectron2's DatasetMapper (image, augmentations, person boxes, optional masks) that in
    training also builds `instances.gt_parsing`. Steps for one record:

    1. read the image and apply the augmentations (resize, flip, optional crop);
    2. for every non-crowd person, read `parsing_file_name` (image-sized part ids of that person)
       and apply the same transforms to it as a segmentation (nearest neighbour);
    3. after an odd number of horizontal flips, swap the left/right part ids of the dataset's
       `parsing_flip_pairs` metadata (as keypoint `flip_indices`);
    4. keep the persons whose box (and mask) are non-empty, their part maps stacked as
       :class:`PersonPartMaps` (P, H, W uint8) in `gt_parsing`.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, flip_table: np.ndarray | None = None, **kwargs):
        """
        Args:
            is_train: training mapper (builds targets) or inference mapper.
            flip_table: 256-entry uint8 part-id table applied after a horizontal flip (see
                :func:`flip_lookup`); None when no flip can happen.
            kwargs: Detectron2 DatasetMapper's arguments.
        """
        super().__init__(is_train, **kwargs)
        self.flip_table = flip_table

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        ret = super().from_config(cfg, is_train)
        flips = any(isinstance(a, T.RandomFlip) and a.horizontal for a in ret["augmentations"])
        ret["flip_table"] = None
        if flips:
            remedy = "set INPUT.RANDOM_FLIP 'none' to train without flipping"
            ret["flip_table"] = flip_lookup(dataset_flip_pairs(list(cfg.DATASETS.TRAIN), remedy))
        return ret

    def _transform_annotations(
        self, dataset_dict: dict, transforms: T.TransformList, image_shape: tuple[int, int]
    ) -> None:
        persons = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        maps = np.zeros((len(persons), *image_shape), dtype=np.uint8)
        flipped = sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms) % 2 == 1
        for index, person in enumerate(persons):
            if "parsing_file_name" not in person:
                raise KeyError(
                    f"{dataset_dict['file_name']}: a person annotation has no parsing_file_name"
                )
            part_map = read_part_map(
                person["parsing_file_name"], dataset_dict["height"], dataset_dict["width"]
            )
            part_map = transforms.apply_segmentation(part_map)
            maps[index] = self.flip_table[part_map] if flipped else part_map
            if not self.use_instance_mask:
                person.pop("segmentation", None)
        annotations = [
            utils.transform_instance_annotations(person, transforms, image_shape)
            for person in persons
        ]
        instances = utils.annotations_to_instances(
            annotations, image_shape, mask_format=self.instance_mask_format
        )
        instances.gt_parsing = PersonPartMaps(torch.from_numpy(maps))
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
