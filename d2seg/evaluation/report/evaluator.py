"""The evaluator that writes ``report.html`` after the evaluators it wraps."""

from __future__ import annotations

import datetime
import html
import logging
import os
import time
from collections.abc import Mapping, Sequence

from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm

from d2seg.evaluation.reference_results import reference_for
from d2seg.evaluation.report.gallery import Gallery, gallery_section, split_gallery
from d2seg.evaluation.report.page import (
    headline_section,
    page_html,
    panel_sections,
    per_class_section,
    results_tables,
)
from d2seg.evaluation.report.protocol import ReportSource
from d2seg.evaluation.training_curves import plot_metrics
from d2seg.utils.file_io import atomic_open

logger = logging.getLogger(__name__)

ASSETS = "report_files"
"""Folder beside ``report.html`` holding its images (relative links)."""


class ReportEvaluator(DatasetEvaluators):
    """Detectron2's ``DatasetEvaluators`` over a dataset's evaluators that also writes
    ``report.html`` to `output_dir` (package docstring). Results are the evaluators' own."""

    def __init__(
        self,
        evaluators: Sequence[DatasetEvaluator],
        dataset_name: str,
        output_dir: str,
        *,
        gallery_size: int = 8,
        config_file: str = "",
        metrics_path: str | None = None,
    ):
        """
        Args:
            evaluators: the dataset's evaluators (their results are returned unchanged).
            dataset_name: the evaluated dataset.
            output_dir: where ``report.html`` and ``report_files/`` go.
            gallery_size: at most this many best and this many worst images; 0: no gallery.
            config_file: the run's config, for its reference numbers (docs/model_zoo.md).
            metrics_path: a training run's ``metrics.json``, plotted when it exists.
        """
        self._gallery = Gallery(gallery_size)
        super().__init__(list(evaluators))
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._config_file = config_file
        self._metrics_path = metrics_path
        self._sources = [e for e in self._evaluators if isinstance(e, ReportSource)]
        scoring = [s for s in self._sources if s.per_image_score() is not None]
        self.gallery_source: ReportSource | None = scoring[0] if gallery_size and scoring else None
        """The evaluator whose per-image score ranks the gallery: the first that gives one."""
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._gallery = Gallery(self._gallery.size)
        self._num_images = 0
        if self.gallery_source is not None:
            self.gallery_source.enable_gallery(self._gallery.offer)

    @property
    def gallery_candidates(self) -> int:
        """How many images of this process the gallery keeps outputs of (its heaps' sizes)."""
        return len(self._gallery)

    def process(self, inputs, outputs) -> None:
        super().process(inputs, outputs)
        self._num_images += len(inputs)

    def evaluate(self):
        start = time.perf_counter()
        results = super().evaluate()
        metric_seconds = time.perf_counter() - start
        scoring_seconds = self.gallery_source.gallery_seconds if self.gallery_source else 0.0
        gathered = comm.gather((self._gallery, self._num_images, scoring_seconds))
        if not comm.is_main_process():
            return results
        try:
            path = self.write_report(results or {}, gathered, metric_seconds)
            logger.info(f"evaluation report of {self._dataset_name}: {path}")
        except Exception:  # a report must not end a training run: the metrics stand
            logger.exception(f"writing the evaluation report of {self._dataset_name} failed")
        return results

    def write_report(self, results: Mapping, gathered: list, metric_seconds: float = 0.0) -> str:
        """Write ``report.html`` (and its images) for `results` and every process's
        (gallery, images evaluated, scoring seconds); returns its path."""
        start = time.perf_counter()
        assets = os.path.join(self._output_dir, ASSETS)
        os.makedirs(assets, exist_ok=True)
        num_images = sum(g[1] for g in gathered)
        scoring_seconds = sum(g[2] for g in gathered)
        tables = [t for s in self._sources for t in s.report_tables()]
        sections = [
            headline_section(results, reference_for(self._config_file or "")),
            self._curves_section(assets),
            per_class_section(tables + results_tables(results)),
            *panel_sections([p for s in self._sources for p in s.report_panels()]),
        ]
        if self._gallery.size:
            best, worst = split_gallery([g[0] for g in gathered], self._gallery.size)
            score = self.gallery_source.per_image_score() if self.gallery_source else None
            sections.append(gallery_section(best, worst, score, assets))
        timing = (
            f"metrics (evaluators' evaluate()): {metric_seconds:.2f} s; gallery scoring in "
            f"process(): {scoring_seconds:.2f} s; report drawing: "
            f"{time.perf_counter() - start:.2f} s"
        )
        page = page_html(
            title=f"Evaluation report: {self._dataset_name}",
            intro=[
                ("dataset", f"{self._dataset_name} ({num_images} images evaluated)"),
                ("config", self._config_file or "(not given)"),
                ("evaluators", ", ".join(type(e).__name__ for e in self._evaluators)),
                ("written", datetime.datetime.now().isoformat(timespec="seconds")),
                ("time", timing),
            ],
            sections=[s for s in sections if s],
        )
        path = os.path.join(self._output_dir, "report.html")
        with atomic_open(path, "w") as f:
            f.write(page)
        return path

    def _curves_section(self, assets: str) -> str:
        if not self._metrics_path or not os.path.isfile(self._metrics_path):
            return ""
        written = plot_metrics(self._metrics_path, os.path.join(assets, "curves"))
        images = "".join(
            f'<img class="curve" src="{ASSETS}/curves/{os.path.basename(p)}" alt="">'
            for p in written
        )
        where = html.escape(self._metrics_path)
        return f"<h2>Training curves</h2><p>From <code>{where}</code>.</p>{images}"
