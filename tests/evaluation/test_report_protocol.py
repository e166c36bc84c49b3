"""The report's public protocol (d2seg.evaluation.report.protocol): an evaluator unknown to the
report shows its table, its own kind of panel and its gallery scores; scores that arrive after
their image's process() call (as the panoptic evaluator's do) land in the gallery as if on time."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator

from d2seg.evaluation import FastCOCOPanopticEvaluator, ReportEvaluator
from d2seg.evaluation.report import ClassTable, Panel, ReportSource, ScoreDefinition, ScoredImage
from tests.evaluation.test_report import ReportPage
from tests.helpers.gt_predictions import panoptic_from_record

DATASET = "d2seg_synthetic_sem_seg_val"


class Marks(Panel):
    """A panel kind the report has never heard of."""

    section = "Marks"
    note = "One mark per image."
    position = 30

    def __init__(self, count: int):
        self.count = count

    def to_html(self) -> str:
        return f'<p class="marks" data-value="{self.count}">{"x" * self.count}</p>'


class Unchanged:
    """The toy's gallery drawing: the image as it is, on both sides."""

    def draw_prediction(self, image: np.ndarray) -> np.ndarray:
        return image

    def draw_ground_truth(self, image: np.ndarray) -> np.ndarray:
        return image


class ToyEvaluator(DatasetEvaluator, ReportSource):
    """Scores image i with ``scores[i]``; with ``delay`` 1 it hands a score over in the next
    process() call (the last one in evaluate()), as the panoptic evaluator does."""

    def __init__(self, scores: list[float], delay: int = 0):
        self.scores = scores
        self.delay = delay
        self.waiting: list[ScoredImage] = []
        self.images = 0

    def reset(self) -> None:
        self.waiting = []
        self.images = 0

    def process(self, inputs, outputs) -> None:
        for input_ in inputs:
            if self.gallery_enabled:
                scored = ScoredImage(
                    self.next_gallery_index(),
                    input_["file_name"],
                    self.scores[self.images],
                    Unchanged,
                )
                self.waiting.append(scored)
                while len(self.waiting) > self.delay:
                    self.hand_over(self.waiting.pop(0))
            self.images += 1

    def evaluate(self):
        for scored in self.waiting:
            self.hand_over(scored)
        self.waiting = []
        return OrderedDict(toy={"images": float(self.images)})

    def per_image_score(self) -> ScoreDefinition:
        return ScoreDefinition("toy", "the test's own number")

    def report_tables(self) -> list[ClassTable]:
        return [ClassTable("toy classes", ["class", "hits"], [["a", (None, 3.0)]])]

    def report_panels(self) -> list[Panel]:
        return [Marks(self.images)]


def _report(evaluator: DatasetEvaluator, tmp_path: Path, images: int, gallery_size: int = 2):
    records = DatasetCatalog.get(DATASET)[:images]
    report = ReportEvaluator([evaluator], DATASET, str(tmp_path), gallery_size=gallery_size)
    report.reset()
    for record in records:
        report.process([record], [{}])
    results = report.evaluate()
    text = (tmp_path / "report.html").read_text()
    return results, ReportPage(text), report, text


@pytest.mark.parametrize("delay", [0, 1])
def test_a_new_evaluator_shows_its_table_panel_and_gallery(synthetic_root, tmp_path, delay):
    scores = [0.3, 0.9, 0.1, 0.6, 0.5]
    results, page, _, text = _report(ToyEvaluator(scores, delay), tmp_path, len(scores))
    assert results == {"toy": {"images": 5.0}}
    assert page.metrics == {"toy/images": 5.0}
    assert "toy classes" in page.tables and 3.0 in page.values
    assert "Marks" in page.headings and "One mark per image." in text
    assert '<p class="marks" data-value="5">xxxxx</p>' in text  # the panel, drawn by itself
    assert page.gallery_scores == [0.9, 0.6, 0.1, 0.3]  # best first, then worst first
    assert len(page.images) == 8 and all((tmp_path / src).is_file() for src in page.images)


def test_gallery_off_asks_no_score(synthetic_root, tmp_path):
    toy = ToyEvaluator([0.5, 0.5])
    _, page, report, _ = _report(toy, tmp_path, 2, gallery_size=0)
    assert report.gallery_source is None and not toy.gallery_enabled
    assert "Gallery" not in page.headings and "Marks" in page.headings


def test_ties_keep_the_image_order_whatever_the_delay(synthetic_root, tmp_path):
    """Equal scores: the best heap keeps the later images, the worst one the earlier ones,
    whether the scores came on time or one call late."""
    pages = []
    for delay in (0, 1):
        folder = tmp_path / str(delay)
        _, page, _, _ = _report(ToyEvaluator([0.5] * 4, delay), folder, 4)
        pages.append([c.split()[1] for c in page.captions])
    assert pages[0] == pages[1] and len(set(pages[0])) == 4


def test_panoptic_scores_arrive_one_call_late(synthetic_root):
    """The panoptic evaluator hands an image's PQ over in the next process() call (its ground
    truth is read meanwhile) and the last one in evaluate(); the sink sees each image once."""
    name = "d2seg_synthetic_panoptic_val"
    records = DatasetCatalog.get(name)[:3]
    evaluator = FastCOCOPanopticEvaluator(name)
    received: list[ScoredImage] = []
    evaluator.reset()
    evaluator.enable_gallery(received.append)
    for calls, record in enumerate(records):
        evaluator.process([record], [{"panoptic_seg": panoptic_from_record(record)}])
        assert [s.index for s in received] == list(range(calls))
    evaluator.evaluate()
    assert [s.index for s in received] == [0, 1, 2]
    assert [s.file_name for s in received] == [r["file_name"] for r in records]
    assert [s.score for s in received] == [1.0, 1.0, 1.0]  # ground truth fed back
    drawing = received[0].drawing()
    image = np.zeros((*panoptic_from_record(records[0])[0].shape, 3), np.uint8)
    assert drawing.draw_prediction(image).shape[0] == image.shape[0]  # a legend may widen it
    assert drawing.draw_ground_truth(image).shape == image.shape
    assert evaluator.report_tables()[0].caption == "panoptic_seg"
    evaluator.enable_gallery(None)  # off again: nothing handed over
    evaluator.reset()
    evaluator.process([records[0]], [{"panoptic_seg": panoptic_from_record(records[0])}])
    evaluator.evaluate()
    assert len(received) == 3
