"""Convert CIHP, MHP-v2 and LIP from their original release layouts into what
:mod:`d2seg.data.datasets.human_parsing` reads (no public converter exists for them).

Original layouts, under each family's folder (``datasets/README.md`` shows them in full):

- CIHP: ``instance-level_human_parsing/{Training,Validation}/{Images,Category_ids,Human_ids,
  Instance_ids}/`` and ``{train,val}_id.txt`` (inside ``Training/`` / ``Validation/`` or beside
  them). ``Category_ids`` is the image's part map, ``Human_ids`` numbers its persons (0 is
  background); a person's part map is ``Category_ids`` where ``Human_ids`` is that person.
  ``Instance_ids`` (part instances) is not needed.
- MHP-v2: ``{train,val}/images/<id>.jpg``, ``{train,val}/parsing_annos/<id>_<N>_<k>.png`` (one
  3-channel PNG per person k of N, part id in channel 0, i.e. red as Pillow reads it) and
  ``list/{train,val}.txt``. The release has no global part map: the persons are painted in
  file order (k = 1..N, a later person over an earlier one) into ``semseg_{split}/<id>.png``.
- LIP: ``TrainVal_images/{train,val}_images/``, ``TrainVal_parsing_annotations/
  {train,val}_segmentations/`` (also one level deeper, as one of its zips unpacks) and
  ``{train,val}_id.txt``; or the same folders flattened into the LIP folder. One person per
  image: the segmentation is both the person's and the global part map.

Every split gets ``annotations/parsing_{split}.json`` and ``parsing_{split}/<id>_<k>.png``.
Each file is written under a temporary name and renamed, the json last, so an interrupted run
leaves no partial file and a rerun rewrites the same content.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import Pool

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

from d2seg.data.datasets.human_parsing import (
    IGNORE_LABEL,
    PARSING_FAMILIES,
    PERSON_CATEGORY_ID,
    ParsingFamily,
    prepared_json,
)
from d2seg.utils.file_io import atomic_json_dump, atomic_open

CIHP_ROOT = "instance-level_human_parsing"
CIHP_SPLIT_DIRS = {"train": "Training", "val": "Validation"}
_LAYOUT_HINT = (
    "set DETECTRON2_DATASETS or pass --root to datasets/prepare_parsing.py; the expected "
    "layout is in datasets/README.md"
)
MHP_V2_ANNOTATION = re.compile(r"^(?P<image>.+)_(?P<count>\d+)_(?P<person>\d+)\.png$")

Persons = list[tuple[np.ndarray, np.ndarray]]
"""Each person of an image as (image-sized part map, boolean mask)."""


@dataclass(frozen=True)
class ImageSource:
    """One image of an original release. Paths are relative to the dataset root.

    `maps` are the files its persons are read from (CIHP: part map and person ids; MHP-v2: one
    file per person; LIP: the segmentation); `semseg` is the release's global part map, or None
    when the converter must paint one.
    """

    stem: str
    image: str
    maps: tuple[str, ...]
    semseg: str | None


def _read_ids(paths: list[str], dataset_root: str) -> list[str]:
    """Image ids of a split list: the first of `paths` that exists, one id per line."""
    for path in paths:
        full = os.path.join(dataset_root, path)
        if os.path.isfile(full):
            with open(full) as f:
                return [line.split()[0] for line in f if line.strip()]
    raise FileNotFoundError(
        f"no image list found; looked for {[os.path.join(dataset_root, p) for p in paths]}"
        f" ({_LAYOUT_HINT})"
    )


def _first_dir(dataset_root: str, candidates: list[str]) -> str:
    for candidate in candidates:
        if os.path.isdir(os.path.join(dataset_root, candidate)):
            return candidate
    raise FileNotFoundError(
        f"none of {[os.path.join(dataset_root, c) for c in candidates]} exists ({_LAYOUT_HINT})"
    )


def cihp_sources(dataset_root: str, split: str) -> list[ImageSource]:
    folder = os.path.join(CIHP_ROOT, CIHP_SPLIT_DIRS[split])
    _first_dir(dataset_root, [folder])
    ids = _read_ids(
        [os.path.join(folder, f"{split}_id.txt"), os.path.join(CIHP_ROOT, f"{split}_id.txt")],
        dataset_root,
    )
    return [
        ImageSource(
            stem=stem,
            image=os.path.join(folder, "Images", stem + ".jpg"),
            maps=(
                os.path.join(folder, "Category_ids", stem + ".png"),
                os.path.join(folder, "Human_ids", stem + ".png"),
            ),
            semseg=os.path.join(folder, "Category_ids", stem + ".png"),
        )
        for stem in ids
    ]


def mhp_v2_sources(dataset_root: str, split: str) -> list[ImageSource]:
    annotation_dir = _first_dir(dataset_root, [os.path.join(split, "parsing_annos")])
    persons: dict[str, list[tuple[int, str]]] = {}
    for name in os.listdir(os.path.join(dataset_root, annotation_dir)):
        match = MHP_V2_ANNOTATION.match(name)
        if match:
            persons.setdefault(match["image"], []).append((int(match["person"]), name))
    sources = []
    for stem in _read_ids([os.path.join("list", f"{split}.txt")], dataset_root):
        if stem not in persons:
            raise FileNotFoundError(
                f"MHP-v2 image {stem!r} of list/{split}.txt has no "
                f"{os.path.join(dataset_root, annotation_dir, stem)}_<N>_<k>.png annotation"
            )
        files = tuple(os.path.join(annotation_dir, name) for _, name in sorted(persons[stem]))
        image = os.path.join(split, "images", stem + ".jpg")
        sources.append(ImageSource(stem=stem, image=image, maps=files, semseg=None))
    return sources


def lip_sources(dataset_root: str, split: str) -> list[ImageSource]:
    image_dir = _first_dir(
        dataset_root, [os.path.join("TrainVal_images", f"{split}_images"), f"{split}_images"]
    )
    segmentation_dir = _first_dir(
        dataset_root,
        [
            os.path.join("TrainVal_parsing_annotations", f"{split}_segmentations"),
            os.path.join(
                "TrainVal_parsing_annotations",
                "TrainVal_parsing_annotations",
                f"{split}_segmentations",
            ),
            f"{split}_segmentations",
        ],
    )
    ids = _read_ids(
        [
            os.path.join("TrainVal_images", f"{split}_id.txt"),
            os.path.join("TrainVal_parsing_annotations", f"{split}_id.txt"),
            f"{split}_id.txt",
        ],
        dataset_root,
    )
    return [
        ImageSource(
            stem=stem,
            image=os.path.join(image_dir, stem + ".jpg"),
            maps=(os.path.join(segmentation_dir, stem + ".png"),),
            semseg=os.path.join(segmentation_dir, stem + ".png"),
        )
        for stem in ids
    ]


def read_png(path: str, channel: int = 0) -> np.ndarray:
    """A PNG as a uint8 (H, W) array; of a colour PNG, channel `channel` (in RGB order)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except OSError as error:
        raise OSError(f"cannot read label map {path!r}: {error}") from error
    if array.ndim == 3:
        array = array[:, :, channel]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"{path!r}: expected an 8-bit label PNG, got {array.dtype} {array.shape}")
    return array


def read_label_map(path: str, num_classes: int, channel: int = 0) -> np.ndarray:
    """A part-id PNG, checked to hold ids below `num_classes` or the ignore label only."""
    array = read_png(path, channel)
    labels = np.unique(array)
    bad = labels[(labels >= num_classes) & (labels != IGNORE_LABEL)]
    if bad.size:
        raise ValueError(
            f"{path!r} holds part ids {bad.tolist()}; this dataset has ids 0..{num_classes - 1} "
            f"(and {IGNORE_LABEL} = ignore)"
        )
    return array


def _person_mask(part_map: np.ndarray, num_classes: int) -> np.ndarray:
    return (part_map > 0) & (part_map < num_classes)


def cihp_persons(
    family: ParsingFamily, dataset_root: str, source: ImageSource
) -> tuple[np.ndarray, Persons]:
    """Part map of the image and (part map, mask) of each person, persons in id order."""
    category_file, human_file = (os.path.join(dataset_root, p) for p in source.maps)
    categories = read_label_map(category_file, family.num_classes)
    humans = read_png(human_file)
    if humans.shape != categories.shape:
        raise ValueError(
            f"{human_file!r} is {humans.shape} but {category_file!r} is {categories.shape}"
        )
    persons = []
    for person in np.unique(humans):
        if person == 0:
            continue
        mask = humans == person
        persons.append((np.where(mask, categories, 0).astype(np.uint8), mask))
    return categories, persons


def mhp_v2_persons(
    family: ParsingFamily, dataset_root: str, source: ImageSource
) -> tuple[np.ndarray, Persons]:
    """Persons from their own PNGs (channel 0), painted in file order into a global map."""
    semantic = None
    persons = []
    for path in source.maps:
        part_map = read_label_map(os.path.join(dataset_root, path), family.num_classes)
        if semantic is None:
            semantic = np.zeros_like(part_map)
        elif part_map.shape != semantic.shape:
            raise ValueError(f"{path!r} is {part_map.shape}, other persons {semantic.shape}")
        mask = _person_mask(part_map, family.num_classes)
        semantic[mask] = part_map[mask]
        persons.append((part_map, mask))
    return semantic, persons


def lip_persons(
    family: ParsingFamily, dataset_root: str, source: ImageSource
) -> tuple[np.ndarray, Persons]:
    """The one person of a LIP image (dropped later when its segmentation is all background)."""
    part_map = read_label_map(os.path.join(dataset_root, source.maps[0]), family.num_classes)
    return part_map, [(part_map, _person_mask(part_map, family.num_classes))]


@dataclass(frozen=True)
class ReleaseReader:
    """How a family's original release is read: its images, then each image's persons."""

    sources: Callable[[str, str], list[ImageSource]]
    persons: Callable[[ParsingFamily, str, ImageSource], tuple[np.ndarray, Persons]]


RELEASE_READERS = {
    "cihp": ReleaseReader(cihp_sources, cihp_persons),
    "mhp_v2": ReleaseReader(mhp_v2_sources, mhp_v2_persons),
    "lip": ReleaseReader(lip_sources, lip_persons),
}


def _write_png(array: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_open(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")


def _write_json(content: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_json_dump(content, path)


def _convert_image(job: tuple[str, str, str, ImageSource]) -> tuple[dict, list[dict]]:
    """Write one image's per-person (and, if needed, global) part maps; return its json image
    entry and its annotations (ids are assigned by the caller)."""
    family_name, dataset_root, split, source = job
    family = PARSING_FAMILIES[family_name]
    semantic, persons = RELEASE_READERS[family_name].persons(family, dataset_root, source)
    image_file = os.path.join(dataset_root, source.image)
    try:
        with Image.open(image_file) as image:
            width, height = image.size
    except OSError as error:
        raise OSError(f"cannot read image {image_file!r}: {error}") from error
    if semantic.shape != (height, width):
        raise ValueError(
            f"part maps of {image_file!r} are {semantic.shape}, the image is {(height, width)}"
        )
    semseg = source.semseg
    if semseg is None:
        semseg = os.path.join(f"semseg_{split}", source.stem + ".png")
        _write_png(semantic, os.path.join(dataset_root, semseg))
    annotations = []
    for index, (part_map, mask) in enumerate(persons, start=1):
        if not mask.any():
            continue
        parsing_file = os.path.join(f"parsing_{split}", f"{source.stem}_{index}.png")
        _write_png(part_map, os.path.join(dataset_root, parsing_file))
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "category_id": PERSON_CATEGORY_ID,
                "iscrowd": 0,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "area": float(mask_util.area(rle)),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "parsing_file_name": parsing_file,
            }
        )
    entry = {
        "file_name": source.image,
        "height": height,
        "width": width,
        "semseg_file_name": semseg,
    }
    return entry, annotations


def _map(function: Callable, jobs: list, workers: int) -> Iterator:
    """`function` over `jobs` in order, in `workers` processes (1: in this one)."""
    if workers <= 1:
        yield from map(function, jobs)
        return
    with Pool(workers) as pool:
        yield from pool.imap(function, jobs, chunksize=8)


def prepare_split(family_name: str, dataset_root: str, split: str, workers: int = 4) -> str:
    """Convert one split of an original release under `dataset_root`; returns the json path."""
    if family_name not in RELEASE_READERS:
        raise KeyError(
            f"unknown human-parsing dataset {family_name!r}; known: {sorted(RELEASE_READERS)}"
        )
    sources = RELEASE_READERS[family_name].sources(dataset_root, split)
    images, annotations = [], []
    jobs = [(family_name, dataset_root, split, source) for source in sources]
    progress = tqdm(
        _map(_convert_image, jobs, workers),
        total=len(jobs),
        desc=f"{PARSING_FAMILIES[family_name].title} {split}",
    )
    for image_id, (entry, persons) in enumerate(progress, start=1):
        images.append({"id": image_id, **entry})
        for person in persons:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **person})
    json_file = prepared_json(dataset_root, split)
    categories = [{"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person"}]
    _write_json({"images": images, "annotations": annotations, "categories": categories}, json_file)
    return json_file
