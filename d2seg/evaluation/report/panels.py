"""The report's panels that several evaluators share: precision-recall curves and
confusion matrices (:class:`~d2seg.evaluation.report.protocol.Panel`)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from d2seg.evaluation.report.protocol import Panel

_PR_IOUS = ((0, "IoU 0.50"), (5, "IoU 0.75"), (None, "IoU 0.50:0.95"))  # COCO's 10 thresholds
_COLORS = ("#1f77b4", "#d62728", "#2ca02c")


def pr_curves(precision: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, 101 precisions) of each :data:`_PR_IOUS` curve from COCOeval's (T, R, K, A, M)
    ``precision`` at area "all" and the last maxDets, averaged over the categories with
    ground truth (-1 entries); an empty list when no category has any."""
    at = precision[:, :, :, 0, -1]  # (T, R, K)
    valid = (at > -1).all(axis=(0, 1))
    if not valid.any():
        return []
    curves = []
    for iou_index, label in _PR_IOUS:
        chosen = at[:, :, valid] if iou_index is None else at[iou_index : iou_index + 1, :, valid]
        curves.append((label, chosen.mean(axis=(0, 2))))
    return curves


def pr_svg(task: str, precision: np.ndarray) -> str:
    """An inline SVG chart of :func:`pr_curves` (recall on x, precision on y)."""
    width, height, margin = 360, 260, 40
    inner_w, inner_h = width - 2 * margin, height - 2 * margin
    parts = [
        f'<svg class="pr" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(task)} precision-recall">',
        f'<text x="{width / 2}" y="16" text-anchor="middle">{html.escape(task)}</text>',
        f'<rect x="{margin}" y="{margin}" width="{inner_w}" height="{inner_h}" fill="none" '
        'stroke="#888"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        x, y = margin + tick * inner_w, margin + (1 - tick) * inner_h
        parts += [
            f'<text x="{x}" y="{height - margin + 14}" text-anchor="middle">{tick:.1f}</text>',
            f'<text x="{margin - 4}" y="{y + 4}" text-anchor="end">{tick:.1f}</text>',
        ]
    parts += [
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">recall</text>',
        f'<text x="10" y="{height / 2}" transform="rotate(-90 10 {height / 2})" '
        'text-anchor="middle">precision</text>',
    ]
    curves = pr_curves(precision)
    recall = np.linspace(0, 1, 101)  # COCO's recThrs
    for index, ((label, values), color) in enumerate(zip(curves, _COLORS)):
        points = " ".join(
            f"{margin + r * inner_w:.1f},{margin + (1 - p) * inner_h:.1f}"
            for r, p in zip(recall, values)
        )
        legend_y = margin + 14 + 14 * index
        parts += [
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>',
            f'<text x="{margin + 6}" y="{legend_y}" fill="{color}" '
            f'data-ap="{100 * float(values.mean())!r}">'
            f"{label} (AP {100 * values.mean():.1f})</text>",
        ]
    if not curves:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
    return "".join(parts) + "</svg>"


def confusion_table(caption: str, confusion: np.ndarray, names: Sequence[str]) -> str:
    """A (ground truth, prediction) count matrix as row shares, counts on hover."""
    confusion = np.asarray(confusion, np.int64)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = confusion / np.maximum(totals, 1)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for name, counts, row in zip(names, confusion, shares):
        cells = "".join(
            f'<td class="num" title="{count} px" data-value="{share!r}" '
            f'style="background:rgba(31,119,180,{share:.3f})">{100 * share:.1f}</td>'
            for count, share in zip(counts.tolist(), row.tolist())
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="confusion"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr><th>gt \\ pred</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div>"
    )


@dataclass(frozen=True)
class PrecisionRecallPanel(Panel):
    """COCO precision-recall curves of one task (COCOeval's ``eval["precision"]``)."""

    task: str
    precision: np.ndarray

    section = "Precision-recall"
    note = (
        "COCO precision at 101 recall points, area all, the largest maxDets, averaged "
        "over the categories with ground truth; the mean of a curve is its AP."
    )
    position = 10

    def to_html(self) -> str:
        return pr_svg(self.task, self.precision)


@dataclass(frozen=True)
class ConfusionPanel(Panel):
    """A confusion matrix, ground truth by row, prediction by column."""

    caption: str
    confusion: np.ndarray
    class_names: Sequence[str]

    section = "Confusion matrix"
    note = (
        "Rows: ground truth, columns: prediction; each cell is the share of its row's pixels "
        "(hover for the count)."
    )
    position = 20

    def to_html(self) -> str:
        return confusion_table(self.caption, self.confusion, self.class_names)
