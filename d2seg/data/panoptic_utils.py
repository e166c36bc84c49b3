"""Helpers for COCO-format panoptic annotations: metadata and semantic conversion (id encoding
is panopticapi's `rgb2id` / `id2rgb`).

Shared by the synthetic dataset generator, the real-data prepare scripts and the tests, so that
every producer of panoptic files writes them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

VOID_LABEL = 255
"""Semantic label for pixels that belong to no segment (Detectron2's `ignore_label`)."""


def standard_panoptic_metadata(categories: Iterable[Mapping]) -> dict:
    """Metadata for Detectron2's "standard" panoptic registration (`register_coco_panoptic`).

    Things and stuff share one contiguous id space in the order of `categories`, and
    `thing_classes`/`stuff_classes` both list every category, as Detectron2 does for COCO.
    """
    categories = list(categories)
    names = [c["name"] for c in categories]
    colors = [list(c["color"]) for c in categories]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if not c["isthing"]
        },
    }


def thing_metadata(categories: Iterable[Mapping]) -> dict:
    """Instance-segmentation metadata: contiguous ids over the thing categories only."""
    things = [c for c in categories if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }


def separated_panoptic_metadata(categories: Iterable[Mapping]) -> dict:
    """Metadata for the "separated" registration that Panoptic FPN trains on.

    Things get contiguous ids of their own; stuff gets 1..N with 0 meaning "any thing",
    matching the semantic PNGs that :func:`panoptic_to_stuff_semantic` writes.
    """
    categories = list(categories)
    stuff = [c for c in categories if not c["isthing"]]
    stuff_map = {c["id"]: i + 1 for i, c in enumerate(stuff)}
    stuff_map[0] = 0
    return {
        **thing_metadata(categories),
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_colors": [[82, 18, 128]] + [list(c["color"]) for c in stuff],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def panoptic_to_stuff_semantic(
    segment_ids: np.ndarray, segments_info: Iterable[Mapping], categories: Iterable[Mapping]
) -> np.ndarray:
    """Semantic map for Panoptic FPN's stuff branch: every thing pixel 0, stuff 1..N, void 255.

    Args:
        segment_ids: (H, W) decoded panoptic segment ids.
        segments_info: the image's `segments_info` from the panoptic json.
        categories: the dataset's panoptic categories (their order defines stuff ids 1..N).
    """
    categories = list(categories)
    stuff_ids = separated_panoptic_metadata(categories)["stuff_dataset_id_to_contiguous_id"]
    is_thing = {c["id"]: bool(c["isthing"]) for c in categories}
    semantic = np.full(segment_ids.shape, VOID_LABEL, dtype=np.uint8)
    for segment in segments_info:
        category_id = segment["category_id"]
        if category_id not in is_thing:
            raise ValueError(
                f"segment {segment['id']} has category_id {category_id}, "
                "which is not among the dataset's categories"
            )
        semantic[segment_ids == segment["id"]] = (
            0 if is_thing[category_id] else stuff_ids[category_id]
        )
    return semantic


def check_panoptic_segments(
    segment_ids: np.ndarray, segments_info: Iterable[Mapping], where: str
) -> None:
    """Raise ValueError naming `where` unless the ids in a panoptic map (0 is VOID, as in
    panopticapi) are exactly those its ``segments_info`` lists."""
    in_map = set(np.unique(segment_ids).tolist()) - {0}
    listed = {int(s["id"]) for s in segments_info}
    if in_map != listed:
        raise ValueError(
            f"{where}: segment ids {sorted(in_map - listed)} are in the PNG but not in "
            f"segments_info, {sorted(listed - in_map)} are in segments_info but not in the PNG"
        )
