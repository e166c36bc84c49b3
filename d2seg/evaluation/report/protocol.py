"""What an evaluator hands the evaluation report, through public methods only.

An evaluator feeds ``report.html`` by deriving from :class:`ReportSource` and overriding what
it has to show:

- :meth:`ReportSource.report_tables`: per-class tables (:class:`ClassTable`);
- :meth:`ReportSource.report_panels`: figures of their own section (:class:`Panel`, e.g.
  :class:`~d2seg.evaluation.report.panels.ConfusionPanel`);
- :meth:`ReportSource.per_image_score` + scores handed over while it evaluates: the gallery
  of the best and worst images. The report switches this on with
  :meth:`ReportSource.enable_gallery`; until then the evaluator scores nothing. Each image's
  :class:`ScoredImage` goes to the report's sink when its score is known, in ``process()`` or
  later (an evaluator that scores an image one call late hands it over then), so the report
  keeps no queue for any evaluator's timing.

Evaluators that are no :class:`ReportSource` are run by the report as they are.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol

import numpy as np
from detectron2.data import DatasetCatalog


@dataclass(frozen=True)
class ClassTable:
    """A sortable per-class table: each row is the class name, then one (``metrics.json`` key
    or None, value) pair per column after the first."""

    caption: str
    header: Sequence[str]
    rows: Sequence[Sequence]


class Panel(ABC):
    """A figure or table shown in the section named :attr:`section` (one heading and note per
    section, whatever the number of panels in it). Sections follow :attr:`position`."""

    section: ClassVar[str]
    note: ClassVar[str]
    position: ClassVar[int]

    @abstractmethod
    def to_html(self) -> str:
        """The panel's self-contained HTML (inline; no external resource)."""


class GalleryDrawing(Protocol):
    """One image's prediction and ground truth, as the gallery draws them. Picklable: the
    gallery gathers them from every process."""

    def draw_prediction(self, image: np.ndarray) -> np.ndarray:
        """The (H, W, 3) RGB `image` with the prediction drawn over it."""

    def draw_ground_truth(self, image: np.ndarray) -> np.ndarray:
        """The (H, W, 3) RGB `image` with the ground truth drawn over it."""


@dataclass(frozen=True)
class ScoredImage:
    """An image's per-image score, handed to the gallery when the score is known.

    ``index`` is the image's position among the images the evaluator got since the gallery
    was enabled (it orders images of equal score); ``drawing`` makes what the gallery draws
    and is called only when the image enters the gallery, so that only candidates keep
    outputs."""

    index: int
    file_name: str
    score: float
    drawing: Callable[[], GalleryDrawing]


GallerySink = Callable[[ScoredImage], None]


class ScoreDefinition(NamedTuple):
    """The per-image score an evaluator gives: the task and what the score is."""

    task: str
    definition: str


class ReportSource:
    """Base of the evaluators that feed the report (module docstring); every method has a
    default that shows nothing, so an evaluator overrides only what it has."""

    _gallery_sink: GallerySink | None = None
    _gallery_images = 0
    _dataset_records: dict[str, dict] | None = None
    gallery_seconds = 0.0
    """Time spent on gallery scoring since the gallery was (re-)enabled."""

    def report_tables(self) -> list[ClassTable]:
        """Per-class tables of the last ``evaluate()``."""
        return []

    def report_panels(self) -> list[Panel]:
        """Figures of the last ``evaluate()``: confusion matrices, PR curves, ..."""
        return []

    def per_image_score(self) -> ScoreDefinition | None:
        """The per-image score this evaluator hands the gallery; None: it gives none."""
        return None

    def enable_gallery(self, sink: GallerySink | None) -> None:
        """Hand every scored image of the coming evaluation to `sink` (None: score nothing);
        restarts the image count and :attr:`gallery_seconds`."""
        self._gallery_sink = sink
        self._gallery_images = 0
        self.gallery_seconds = 0.0

    @property
    def gallery_enabled(self) -> bool:
        """Whether a report asked for per-image scores."""
        return self._gallery_sink is not None

    @contextlib.contextmanager
    def gallery_work(self) -> Iterator[None]:
        """Count the block's time as gallery scoring."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.gallery_seconds += time.perf_counter() - start

    def next_gallery_index(self) -> int:
        """The next image's :attr:`ScoredImage.index`."""
        self._gallery_images += 1
        return self._gallery_images - 1

    def hand_over(self, scored: ScoredImage) -> None:
        """Give a scored image to the gallery."""
        if self._gallery_sink is not None:
            self._gallery_sink(scored)

    def dataset_record(self, dataset_name: str, input_: Mapping) -> dict:
        """The dataset record of `input_`'s image (the test mapper drops annotations): the
        records are loaded once, on the first call."""
        if "file_name" not in input_:
            raise KeyError(
                f"an input of {dataset_name!r} has no 'file_name' (keys {sorted(input_)}): "
                "the report's gallery needs it (TEST.REPORT.GALLERY off)"
            )
        if self._dataset_records is None:
            self._dataset_records = {r["file_name"]: r for r in DatasetCatalog.get(dataset_name)}
        record = self._dataset_records.get(input_["file_name"])
        if record is None:
            raise KeyError(f"image {input_['file_name']!r} is not in dataset {dataset_name!r}")
        return record

    def score_images(
        self,
        dataset_name: str,
        inputs: Sequence[Mapping],
        outputs: Sequence[Mapping],
        score_image: Callable[
            [dict, Mapping, str], tuple[float, Callable[[], GalleryDrawing]] | None
        ],
    ) -> None:
        """Hand over the images that `score_image(record, output, dataset_name)` scores now
        (None: not scorable; :mod:`d2seg.evaluation.gallery_items`); nothing when the gallery
        is off."""
        if not self.gallery_enabled:
            return
        with self.gallery_work():
            for input_, output in zip(inputs, outputs):
                index = self.next_gallery_index()
                record = self.dataset_record(dataset_name, input_)
                scored = score_image(record, output, dataset_name)
                if scored is not None:
                    self.hand_over(ScoredImage(index, record["file_name"], *scored))
