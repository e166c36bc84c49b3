"""Draw model outputs on images with Detectron2's Visualizer.

:func:`draw_predictions` lays one panel per output kind side by side (panoptic segments,
instances, human parts, semantic map, in this order); panoptic, part and semantic panels carry a
legend in a side panel of fixed width, so every image of the same size and model gives a picture
of the same size (the demo relies on it for videos).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

# extra per-instance scores shown next to the detection score, with their label
EXTRA_SCORES = (("mask_scores", "mask"), ("parsing_scores", "parsing"))
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LEGEND_BACKGROUND = (255, 255, 255)
_LEGEND_TEXT = (0, 0, 0)


def draw_predictions(
    image_rgb: np.ndarray, outputs: dict, metadata: Metadata, score_threshold: float = 0.5
) -> np.ndarray:
    """Draw every output of one image, one panel each, side by side.

    Panels: `panoptic_seg` (segments + legend of the classes present); `instances` with
    `pred_parsing` (part maps, :func:`draw_parsing`, + legend of the parts present); other
    `instances`, or parsing ones that also carry `pred_masks` (masks, boxes and
    :func:`instance_labels`); `sem_seg` (argmax map + legend of the classes present).

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        outputs: a model's output dict for this image (`panoptic_seg`, `instances`, `sem_seg`).
        metadata: the dataset metadata that names the classes; missing `thing_colors` /
            `stuff_colors` are filled from Detectron2's colormap.
        score_threshold: instances whose `scores` (parsing: `parsing_scores`) are below it are
            not drawn.

    Returns:
        (H, W', 3) uint8 RGB picture, W' = the panels' and legends' widths summed.
    """
    metadata = with_colors(metadata)
    panels = []
    if "panoptic_seg" in outputs:
        panoptic_seg, segments_info = outputs["panoptic_seg"]
        panels.append(_panoptic_panel(image_rgb, panoptic_seg.to("cpu"), segments_info, metadata))
    if "instances" in outputs:
        instances = outputs["instances"].to("cpu")
        if instances.has("pred_parsing"):
            panels.append(_parsing_panel(image_rgb, instances, metadata, score_threshold))
        if not instances.has("pred_parsing") or instances.has("pred_masks"):
            panels.append(draw_instances(image_rgb, instances, metadata, score_threshold))
    if "sem_seg" in outputs:
        panels.append(_semantic_panel(image_rgb, outputs["sem_seg"].to("cpu"), metadata))
    if not panels:
        raise KeyError(f"no panoptic_seg, instances or sem_seg in outputs: {sorted(outputs)}")
    return np.concatenate(panels, axis=1)


def with_colors(metadata: Metadata) -> Metadata:
    """`metadata`, or a copy of it whose `thing_colors` / `stuff_colors` cover every class of
    `thing_classes` / `stuff_classes` (Detectron2's colormap, cycled, for the missing ones), so
    that the drawings and their legends agree instead of Detectron2 picking random colours."""
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    filled = {}
    for classes_key, colors_key in (
        ("thing_classes", "thing_colors"),
        ("stuff_classes", "stuff_colors"),
    ):
        classes = metadata.get(classes_key) or []
        colors = list(metadata.get(colors_key) or [])
        if len(colors) < len(classes):
            filled[colors_key] = colors + [
                palette[k % len(palette)] for k in range(len(colors), len(classes))
            ]
    if not filled:
        return metadata
    return Metadata(**{**metadata.as_dict(), **filled})


def instance_labels(instances: Instances, class_names: list[str] | None) -> list[str]:
    """One label per instance: class name (or ``class <id>`` beyond `class_names`), detection
    score with 2 decimals, then each extra score the model predicts, e.g.
    ``person 0.93 (mask 0.81)`` for Mask Scoring R-CNN's `mask_scores`."""
    names = class_names or []
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
    extras = [
        (label, instances.get(field)) for field, label in EXTRA_SCORES if instances.has(field)
    ]
    labels = []
    for index in range(len(instances)):
        parts = []
        if classes is not None:
            k = classes[index]
            parts.append(names[k] if k < len(names) else f"class {k}")
        if instances.has("scores"):
            parts.append(f"{float(instances.scores[index]):.2f}")
        parts += [f"({label} {float(scores[index]):.2f})" for label, scores in extras]
        labels.append(" ".join(parts))
    return labels


def draw_instances(
    image_rgb: np.ndarray, instances: Instances, metadata: Metadata, score_threshold: float = 0.5
) -> np.ndarray:
    """Masks (where predicted) and boxes of the instances whose `scores` reach
    `score_threshold`, coloured by class (`thing_colors`), labelled by :func:`instance_labels`.

    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    instances = instances.to("cpu")
    instances = instances[instances.scores >= score_threshold]
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    masks = list(instances.pred_masks.numpy()) if instances.has("pred_masks") else None
    visualizer.overlay_instances(
        boxes=instances.pred_boxes if instances.has("pred_boxes") else None,
        masks=masks,
        labels=instance_labels(instances, metadata.get("thing_classes")),
        assigned_colors=_class_colors(instances, metadata),
        alpha=0.5,
    )
    return visualizer.output.get_image()


def draw_parsing(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata: Metadata,
    score_threshold: float = 0.5,
    alpha: float = 0.6,
) -> np.ndarray:
    """Draw each person's part map in the dataset palette, then the person boxes and labels.

    Persons whose `parsing_scores` (else `scores`) reach `score_threshold` are pasted (see
    `PartProbabilities.label_crops`) and painted in ascending score, so that where two overlap
    the more confident one shows; part pixels are blended with the image at `alpha`.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image the instances were predicted at.
        instances: a parsing model's `instances` (`pred_parsing`, `pred_boxes`, `scores`).
        metadata: dataset metadata with `parsing_colors` (one RGB triple per part id).
        score_threshold: persons below it are not drawn.
        alpha: opacity of the part colours.

    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    return _draw_parts(image_rgb, instances, metadata, score_threshold, alpha)[0]


def _draw_parts(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata: Metadata,
    score_threshold: float,
    alpha: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`draw_parsing`'s overlay and the (H, W) part-id map it painted."""
    colors = metadata.get("parsing_colors")
    if colors is None:
        raise KeyError(f"metadata of {metadata.name!r} has no parsing_colors to draw parts with")
    instances = instances.to("cpu")
    scores = instances.parsing_scores if instances.has("parsing_scores") else instances.scores
    instances = instances[scores >= score_threshold]
    scores = scores[scores >= score_threshold]
    crops = instances.pred_parsing.label_crops(instances.pred_boxes.tensor, instances.image_size)
    labels = np.zeros(image_rgb.shape[:2], dtype=np.int64)
    for index in torch.argsort(scores, stable=True).tolist():
        x0, y0, crop = crops[index]
        region = labels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
        parts = crop.numpy() > 0
        region[parts] = crop.numpy()[parts]
    palette = np.asarray(colors, dtype=np.float64)
    if labels.max() >= len(palette):
        raise ValueError(
            f"part id {labels.max()} predicted but {metadata.name!r} has {len(palette)} "
            f"parsing_colors"
        )
    blended = image_rgb.astype(np.float64)
    parts = labels > 0
    blended[parts] = (1 - alpha) * blended[parts] + alpha * palette[labels[parts]]
    visualizer = Visualizer(blended.round().astype(np.uint8), metadata)
    visualizer.overlay_instances(
        boxes=instances.pred_boxes,
        labels=instance_labels(instances, metadata.get("thing_classes")),
        assigned_colors=_class_colors(instances, metadata),
    )
    return visualizer.output.get_image(), labels


def _class_colors(instances: Instances, metadata: Metadata) -> list[tuple] | None:
    """Matplotlib colours (0-1) of each instance's class, None (Detectron2 picks) without
    classes."""
    colors = metadata.get("thing_colors")
    if not instances.has("pred_classes") or not colors:
        return None
    return [tuple(c / 255 for c in colors[k]) for k in instances.pred_classes.tolist()]


def _require(metadata: Metadata, key: str, output: str) -> list:
    names = metadata.get(key)
    if names is None:
        raise KeyError(
            f"metadata of {metadata.name!r} has no {key} to name the classes of {output}: "
            f"use a config whose DATASETS.TEST names the model's dataset"
        )
    return names


def _labels_by_area(label_map: np.ndarray, keep) -> list[int]:
    """The labels of `label_map` for which `keep(label)` holds, largest area first."""
    labels, areas = np.unique(label_map, return_counts=True)
    return [int(labels[i]) for i in np.argsort(-areas, kind="stable") if keep(int(labels[i]))]


def panoptic_legend(
    panoptic_seg: torch.Tensor, segments_info: list[dict] | None, metadata: Metadata
) -> list[tuple[str, list[int]]]:
    """(class name, RGB colour) of each class present in a panoptic prediction, largest total
    area first, each class once.

    `segments_info` None means Panoptic-DeepLab's form (id = class x `label_divisor` +
    instance, VOID -1); otherwise ids missing from `segments_info` (PanopticFPN's 0) are unlabelled
    and not listed. Things are named by `thing_classes`, stuff by `stuff_classes`, as Detectron2's
    `draw_panoptic_seg` names them.
    """
    thing_names = _require(metadata, "thing_classes", "panoptic_seg")
    stuff_names = _require(metadata, "stuff_classes", "panoptic_seg")
    ids, areas = torch.unique(panoptic_seg, return_counts=True)
    if segments_info is None:
        divisor = metadata.label_divisor
        things = set(metadata.thing_dataset_id_to_contiguous_id.values())
        categories = {i: (i // divisor, i // divisor in things) for i in ids.tolist() if i != -1}
    else:
        categories = {s["id"]: (s["category_id"], s["isthing"]) for s in segments_info}
    totals: dict[tuple[int, bool], int] = {}
    for segment, area in zip(ids.tolist(), areas.tolist()):
        if segment in categories:
            totals[categories[segment]] = totals.get(categories[segment], 0) + area
    entries = []
    for category, isthing in sorted(totals, key=lambda key: -totals[key]):
        names, colors = (
            (thing_names, metadata.thing_colors)
            if isthing
            else (stuff_names, metadata.stuff_colors)
        )
        entries.append((names[category], list(colors[category])))
    return entries


def _panoptic_panel(
    image_rgb: np.ndarray,
    panoptic_seg: torch.Tensor,
    segments_info: list[dict] | None,
    metadata: Metadata,
) -> np.ndarray:
    entries = panoptic_legend(panoptic_seg, segments_info, metadata)
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    drawn = visualizer.draw_panoptic_seg(panoptic_seg, segments_info).get_image()
    names = list(metadata.thing_classes) + list(metadata.stuff_classes)
    return _with_legend(drawn, "panoptic", entries, names)


def _semantic_panel(image_rgb: np.ndarray, sem_seg: torch.Tensor, metadata: Metadata) -> np.ndarray:
    """`sem_seg` (C, H, W) scores: the argmax map drawn by Detectron2 (classes beyond
    `stuff_classes` left undrawn, as Detectron2 does) with a legend of the classes present."""
    names = _require(metadata, "stuff_classes", "sem_seg")
    label_map = sem_seg.argmax(dim=0).numpy()
    present = _labels_by_area(label_map, lambda label: label < len(names))
    entries = [(names[k], list(metadata.stuff_colors[k])) for k in present]
    drawn = Visualizer(image_rgb, metadata).draw_sem_seg(label_map).get_image()
    return _with_legend(drawn, "semantic", entries, names)


def _parsing_panel(
    image_rgb: np.ndarray, instances: Instances, metadata: Metadata, score_threshold: float
) -> np.ndarray:
    drawn, part_map = _draw_parts(image_rgb, instances, metadata, score_threshold)
    colors = metadata.parsing_colors
    names = metadata.get("parsing_classes") or [f"part {k}" for k in range(len(colors))]
    present = _labels_by_area(part_map, lambda label: label > 0)
    return _with_legend(drawn, "parts", [(names[k], list(colors[k])) for k in present], names)


def _text_metrics(height: int) -> tuple[float, int, int]:
    """(font scale, thickness, row height) of legend text for an image `height` pixels high:
    scale 0.4 up to 400 px, growing in proportion above, so the legend stays readable."""
    scale = max(0.4, height / 1000)
    thickness = max(1, round(scale * 2))
    (_, text_height), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    return scale, thickness, text_height + baseline + 4


def legend_width(height: int, title: str, names: list[str]) -> int:
    """Width of a legend for an image `height` pixels high that can show `title` and any of
    `names` (fixed per model and image size, whichever classes an image shows)."""
    scale, thickness, row = _text_metrics(height)
    texts = [title, f"+{len(names)} more", *names]
    text_width = max(cv2.getTextSize(text, _FONT, scale, thickness)[0][0] for text in texts)
    return row + text_width + 3 * (row // 3 + 1)


def draw_legend(
    height: int, width: int, title: str, entries: list[tuple[str, list[int]]]
) -> np.ndarray:
    """A (height, width, 3) uint8 RGB legend: `title`, then one row per (name, RGB colour)
    entry, a colour swatch and the name; rows that do not fit are summed up as ``+N more``."""
    scale, thickness, row = _text_metrics(height)
    pad = row // 3 + 1
    legend = np.full((height, width, 3), _LEGEND_BACKGROUND, dtype=np.uint8)
    rows = height // row - 1  # the first row holds the title
    if len(entries) > rows > 0:
        hidden = len(entries) - rows + 1
        entries = entries[: rows - 1] + [(f"+{hidden} more", list(_LEGEND_BACKGROUND))]
    baseline = row - pad
    cv2.putText(legend, title, (pad, baseline), _FONT, scale, _LEGEND_TEXT, thickness, cv2.LINE_AA)
    for index, (name, color) in enumerate(entries, start=1):
        top = index * row
        cv2.rectangle(legend, (pad, top + 2), (pad + row - 4, top + row - 3), color, cv2.FILLED)
        origin = (2 * pad + row - 4, top + baseline)
        cv2.putText(legend, name, origin, _FONT, scale, _LEGEND_TEXT, thickness, cv2.LINE_AA)
    return legend


def _with_legend(
    drawn: np.ndarray, title: str, entries: list[tuple[str, list[int]]], names: list[str]
) -> np.ndarray:
    height = drawn.shape[0]
    legend = draw_legend(height, legend_width(height, title, names), title, entries)
    return np.concatenate([drawn, legend], axis=1)
