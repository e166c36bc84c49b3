"""Human-parsing datasets: CIHP, MHP-v2 and LIP (Parsing R-CNN, Yang et al., CVPR 2019).

Each family is read from the files that ``datasets/prepare_parsing.py`` writes next to the
original release (see ``datasets/README.md``):

- ``annotations/parsing_{split}.json``: a COCO instances json with one "person" annotation per
  person (box, RLE mask, area) plus, per annotation, ``parsing_file_name`` (that person's part
  map) and, per image, ``semseg_file_name`` (the image's global part map, for mIoU); every path
  is relative to the dataset root;
- ``parsing_{split}/<image>_<k>.png``: one part map per person, image-sized, uint8 part ids of
  that person and 0 elsewhere.

Registered names: ``cihp_{train,val}``, ``mhp_v2_{train,val}``, ``lip_{train,val}``, each with
``evaluator_type="parsing"`` and the part names, colours and left/right flip pairs of its family.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

PERSON_CATEGORY_ID = 1
"""The only category id of the prepared jsons ("person"), contiguous id 0."""

IGNORE_LABEL = 255
"""Part id that no metric counts (the reference's `fast_hist` drops ids >= NUM_PARSING)."""

CIHP_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat",
    "socks", "pants", "torso-skin", "scarf", "skirt", "face", "left-arm", "right-arm",
    "left-leg", "right-leg", "left-shoe", "right-shoe",
)  # fmt: skip
LIP_CLASSES = CIHP_CLASSES[:10] + ("jumpsuits",) + CIHP_CLASSES[11:]  # LIP's id 10
MHP_V2_CLASSES = (
    "background", "cap/hat", "helmet", "face", "hair", "left-arm", "right-arm", "left-hand",
    "right-hand", "protector", "bikini/bra", "jacket/windbreaker/hoodie", "tee-shirt",
    "polo-shirt", "sweater", "singlet", "torso-skin", "pants", "shorts/swim-shorts", "skirt",
    "stockings", "socks", "left-boot", "right-boot", "left-shoe", "right-shoe",
    "left-highheel", "right-highheel", "left-sandal", "right-sandal", "left-leg", "right-leg",
    "left-foot", "right-foot", "coat", "dress", "robe", "jumpsuits",
    "other-full-body-clothes", "headwear", "backpack", "ball", "bats", "belt", "bottle",
    "carrybag", "cases", "sunglasses", "eyewear", "gloves", "scarf", "umbrella",
    "wallet/purse", "watch", "wristband", "tie", "other-accessaries",
    "other-upper-body-clothes", "other-lower-body-clothes",
)  # fmt: skip
"""The 59 classes of the MHP-v2 README (58 parts + background), in id order."""

LIP_PALETTE = (
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0),
    (0, 0, 255), (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0),
    (255, 170, 0),
)  # fmt: skip
"""The colours LIP and CIHP draw their 20 part ids with (their visualisation palette)."""

CIHP_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))  # left/right arm, leg, shoe
MHP_V2_FLIP_PAIRS = (
    (5, 6), (7, 8), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31), (32, 33),
)  # fmt: skip
"""Left/right arm, hand, boot, shoe, high heel, sandal, leg, foot."""


def label_colormap(num_classes: int) -> list[tuple[int, int, int]]:
    """A distinct colour per id: the bits of the id spread over R, G and B from the top bit
    down (the PASCAL VOC colour map), used for MHP-v2, which ships no palette of its own."""
    colors = []
    for label in range(num_classes):
        rgb = [0, 0, 0]
        for shift in range(8):
            for channel in range(3):
                rgb[channel] |= ((label >> (3 * shift + channel)) & 1) << (7 - shift)
        colors.append((rgb[0], rgb[1], rgb[2]))
    return colors


@dataclass(frozen=True)
class ParsingFamily:
    """A human-parsing dataset family: its folder under $DETECTRON2_DATASETS and its parts."""

    name: str  # registered names are f"{name}_{split}"
    title: str
    dirname: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    release: str  # what the folder holds before preparation, for error messages

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def metadata(self) -> dict:
        """Detectron2 metadata: the contract between the loader, mapper, model and evaluator."""
        return {
            "thing_classes": ["person"],
            "thing_colors": [[220, 20, 60]],
            "thing_dataset_id_to_contiguous_id": {PERSON_CATEGORY_ID: 0},
            "parsing_classes": list(self.classes),
            "parsing_colors": [list(c) for c in self.colors],
            "parsing_flip_pairs": [list(p) for p in self.flip_pairs],
            "evaluator_type": "parsing",
            "ignore_label": IGNORE_LABEL,
        }


PARSING_FAMILIES = {
    "cihp": ParsingFamily(
        name="cihp",
        title="CIHP",
        dirname="CIHP",
        classes=CIHP_CLASSES,
        colors=LIP_PALETTE,
        flip_pairs=CIHP_FLIP_PAIRS,
        release="instance-level_human_parsing/{Training,Validation}/...",
    ),
    "mhp_v2": ParsingFamily(
        name="mhp_v2",
        title="MHP-v2",
        dirname="LV-MHP-v2",
        classes=MHP_V2_CLASSES,
        colors=tuple(label_colormap(len(MHP_V2_CLASSES))),
        flip_pairs=MHP_V2_FLIP_PAIRS,
        release="{train,val}/{images,parsing_annos}/ and list/{train,val}.txt",
    ),
    "lip": ParsingFamily(
        name="lip",
        title="LIP",
        dirname="LIP",
        classes=LIP_CLASSES,
        colors=LIP_PALETTE,
        flip_pairs=CIHP_FLIP_PAIRS,
        release="TrainVal_images/ and TrainVal_parsing_annotations/",
    ),
}
PARSING_SPLITS = ("train", "val")


def prepared_json(dataset_root: str, split: str) -> str:
    """Path of the json that ``datasets/prepare_parsing.py`` writes for a split."""
    return os.path.join(dataset_root, "annotations", f"parsing_{split}.json")


def check_prepared(family: ParsingFamily, dataset_root: str, split: str) -> str:
    """The split's prepared json; a clear error when the dataset or its preparation is missing."""
    if not os.path.isdir(dataset_root):
        raise FileNotFoundError(
            f"{family.title} not found at {dataset_root!r}: put the original release "
            f"({family.release}) there, under $DETECTRON2_DATASETS (now "
            f"{os.getenv('DETECTRON2_DATASETS', 'unset, so ./datasets')}); see "
            "datasets/README.md."
        )
    json_file = prepared_json(dataset_root, split)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"{json_file!r} is missing: run `python datasets/prepare_parsing.py {family.name}` "
            "once to convert the original release (see datasets/README.md)."
        )
    return json_file


def _check_keys(entry: dict, keys: tuple[str, ...], json_file: str, what: str) -> None:
    missing = [key for key in keys if key not in entry]
    if missing:
        raise KeyError(f"{json_file}: {what} {entry.get('id')!r} has no {missing}")


_IMAGE_KEYS = ("id", "file_name", "height", "width", "semseg_file_name")
_ANNOTATION_KEYS = ("image_id", "category_id", "bbox", "segmentation", "parsing_file_name")


def load_parsing_json(json_file: str, dataset_root: str) -> list[dict]:
    """Detectron2 dataset dicts of a prepared human-parsing json.

    Every record has ``file_name``, ``image_id``, ``height``, ``width``,
    ``parsing_semseg_file_name`` and ``annotations``; each annotation has ``bbox`` (XYWH_ABS),
    ``category_id`` 0, ``iscrowd``, ``segmentation`` (COCO RLE) and ``parsing_file_name``.
    Paths in the json are relative to `dataset_root`.
    """
    with open(json_file) as f:
        content = json.load(f)
    for key in ("images", "annotations"):
        if key not in content:
            raise KeyError(f"{json_file}: no {key!r}; not a prepared human-parsing json")
    by_image: dict[int, list[dict]] = {}
    for ann in content["annotations"]:
        _check_keys(ann, _ANNOTATION_KEYS, json_file, "annotation")
        if ann["category_id"] != PERSON_CATEGORY_ID:
            raise ValueError(
                f"{json_file}: annotation {ann.get('id')!r} has category_id "
                f"{ann['category_id']!r}; only {PERSON_CATEGORY_ID} (person) is expected"
            )
        person = {
            "bbox": ann["bbox"],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "iscrowd": ann.get("iscrowd", 0),
            "segmentation": ann["segmentation"],
            "parsing_file_name": os.path.join(dataset_root, ann["parsing_file_name"]),
        }
        by_image.setdefault(ann["image_id"], []).append(person)
    records = []
    for image in content["images"]:
        _check_keys(image, _IMAGE_KEYS, json_file, "image")
        records.append(
            {
                "file_name": os.path.join(dataset_root, image["file_name"]),
                "image_id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "parsing_semseg_file_name": os.path.join(dataset_root, image["semseg_file_name"]),
                "annotations": by_image.pop(image["id"], []),
            }
        )
    if by_image:
        raise KeyError(f"{json_file}: annotations refer to unknown image ids {sorted(by_image)}")
    return records


def _load_family_split(family: ParsingFamily, dataset_root: str, split: str) -> list[dict]:
    return load_parsing_json(check_prepared(family, dataset_root, split), dataset_root)


def register_parsing_split(
    name: str, family: ParsingFamily, dataset_root: str, split: str, loader=None
) -> None:
    """Register one split read from `dataset_root` (`loader` replaces the default one, e.g.
    to generate the data first) with the metadata of `family`."""
    DatasetCatalog.register(
        name, loader or partial(_load_family_split, family, dataset_root, split)
    )
    MetadataCatalog.get(name).set(
        json_file=prepared_json(dataset_root, split), dataset_root=dataset_root, **family.metadata()
    )


def register_all_human_parsing(datasets_root: str) -> None:
    """Register ``{cihp,mhp_v2,lip}_{train,val}`` under `datasets_root`."""
    for family in PARSING_FAMILIES.values():
        dataset_root = os.path.join(datasets_root, family.dirname)
        for split in PARSING_SPLITS:
            register_parsing_split(f"{family.name}_{split}", family, dataset_root, split)
