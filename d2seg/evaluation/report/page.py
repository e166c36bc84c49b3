"""The HTML of ``report.html``: sortable tables, the headline metrics and the page around
the sections (inline CSS and JS, nothing from the network)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from d2seg.evaluation.report.protocol import ClassTable, Panel
from d2seg.evaluation.training_curves import split_per_class


def _number(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _cell(metric: str | None, value) -> str:
    """A numeric cell: the exact value in ``data-value`` (sorting, tests), two decimals shown;
    ``data-metric`` names the ``metrics.json`` key where the value is one."""
    name = f' data-metric="{html.escape(metric)}"' if metric else ""
    return f'<td class="num"{name} data-value="{float(value)!r}">{_number(value)}</td>'


def table_html(table: ClassTable) -> str:
    """A sortable table; every cell after the first is a (metrics.json key or None, value)."""
    caption, header, rows = table.caption, table.header, table.rows
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><td>{html.escape(str(row[0]))}</td>"
        + "".join(_cell(metric, value) for metric, value in row[1:])
        + "</tr>"
        for row in rows
    )
    return (
        f'<table class="sortable"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def headline_section(results: Mapping, reference: tuple | None) -> str:
    """The metrics of every task beside the model zoo's reference numbers (None: none listed)."""
    numbers = reference[2] if reference else {}
    tables = []
    for task, metrics in results.items():
        rows = []
        for metric, value in metrics.items():
            if split_per_class(metric) is None:
                key = f"{task}/{metric}"
                rows.append([metric, (key, value), (None, numbers.get(key, math.nan))])
        if rows:
            tables.append(table_html(ClassTable(task, ["metric", "this run", "reference"], rows)))
    if reference:
        name, source, _ = reference
        note = f"Reference: <code>{html.escape(name)}</code>, {html.escape(source)}."
    else:
        note = "docs/model_zoo.md lists no comparable reference numbers for this config."
    if not tables:
        return "<h2>Metrics</h2><p>The evaluators returned no metrics.</p>"
    return f"<h2>Metrics</h2><p>{note}</p>" + "".join(tables)


def results_tables(results: Mapping) -> list[ClassTable]:
    """One table per task of the per-class metrics among its results (``AP-<class>``,
    ``IoU-<class>``, ...), one column per metric prefix."""
    tables = []
    for task, metrics in results.items():
        by_class: dict[str, dict[str, tuple[str, float]]] = {}
        prefixes: list[str] = []
        for metric, value in metrics.items():
            split = split_per_class(metric)
            if split is None:
                continue
            prefix, name = split
            prefixes += [prefix] if prefix not in prefixes else []
            by_class.setdefault(name, {})[prefix] = (f"{task}/{metric}", value)
        if by_class:
            rows = [
                [name] + [values.get(p, (None, math.nan)) for p in prefixes]
                for name, values in by_class.items()
            ]
            tables.append(ClassTable(task, ["class", *prefixes], rows))
    return tables


def per_class_section(tables: Sequence[ClassTable]) -> str:
    """The "Per class" section of `tables` (empty without any)."""
    if not tables:
        return ""
    return "<h2>Per class</h2><p>Click a column header to sort.</p>" + "".join(
        table_html(t) for t in tables
    )


def panel_sections(panels: Sequence[Panel]) -> list[str]:
    """One section per panel kind, in :attr:`Panel.position` order (then first appearance):
    its heading and note once, then its panels."""
    by_section: dict[str, list[Panel]] = {}
    for panel in panels:
        by_section.setdefault(panel.section, []).append(panel)
    ordered = sorted(by_section.values(), key=lambda group: group[0].position)
    return [
        f"<h2>{html.escape(group[0].section)}</h2><p>{html.escape(group[0].note, quote=False)}</p>"
        + "".join(p.to_html() for p in group)
        for group in ordered
    ]


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:0 1.5em 1em 0;display:inline-table;vertical-align:top}
caption{font-weight:bold;text-align:left}
td,th{border:1px solid #ddd;padding:2px 6px}td.num{text-align:right}
table.sortable th{cursor:pointer;background:#f3f3f3}
table.confusion td{font-size:.8em}div.scroll{overflow-x:auto}
dl.intro{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dl.intro dt{font-weight:bold}
img.curve{max-width:100%;margin:4px}
figure{display:inline-block;margin:6px;vertical-align:top}
div.pair img{margin-right:2px;border:1px solid #ccc}
figcaption{font-size:.85em}
svg.pr{margin:4px;font-size:11px}
#js-errors{color:#b00}
"""

_SCRIPT = """
window.onerror = function (message, source, line) {
  document.getElementById("js-errors").textContent += message + " (line " + line + ")\\n";
};
function cellKey(cell) {
  if (cell.dataset.value === undefined) return cell.textContent.toLowerCase();
  const number = parseFloat(cell.dataset.value);
  return isNaN(number) ? -Infinity : number;
}
function sortBy(header) {
  const column = Array.prototype.indexOf.call(header.parentNode.children, header);
  const ascending = header.dataset.order !== "asc";
  header.dataset.order = ascending ? "asc" : "desc";
  const body = header.closest("table").tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort(function (a, b) {
    const x = cellKey(a.cells[column]), y = cellKey(b.cells[column]);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
document.querySelectorAll("table.sortable th").forEach(function (header) {
  header.addEventListener("click", function () { sortBy(header); });
});
window.addEventListener("load", function () {
  const images = Array.from(document.images);
  const broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.dataset.images = String(images.length);
  document.body.dataset.brokenImages = broken.map(function (i) {
    return i.getAttribute("src");
  }).join(" ");
  document.body.dataset.loaded = "1";
});
"""


def page_html(title: str, intro: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    """The whole page: title, (name, value) facts, then the sections' HTML."""
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in intro)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><dl class="intro">{facts}</dl>'
        + "".join(sections)
        + f'<pre id="js-errors"></pre><script>{_SCRIPT}</script></body></html>'
    )
