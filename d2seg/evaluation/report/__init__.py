"""The evaluation report: ``report.html`` beside every evaluation's results.

:func:`d2seg.evaluation.build_evaluator` wraps a dataset's evaluators in a
:class:`ReportEvaluator` (``TEST.REPORT.ENABLED``), which runs them unchanged and, on the main
process, after they have computed their metrics, writes a self-contained page (inline CSS and
JS, images as files in ``report_files/`` beside it, nothing from the network):

- the headline metrics of every task, with the model zoo's reference numbers for the config
  (:mod:`d2seg.evaluation.reference_results`, ``TEST.REPORT.CONFIG_FILE``);
- the training curves of ``OUTPUT_DIR/metrics.json`` where it exists
  (:mod:`d2seg.evaluation.training_curves`);
- a per-class table per task (AP, PQ / SQ / RQ / TP / FP / FN, IoU / accuracy, part IoU), sorted
  by clicking any column header;
- what each evaluator hands over through :class:`~d2seg.evaluation.report.protocol.ReportSource`
  (the only way the report learns anything beyond the results): per-class tables (e.g. PQ /
  SQ / RQ / TP / FP / FN), panels (precision-recall curves of COCO box / mask AP, confusion
  matrices) and per-image scores;
- a gallery of the ``TEST.REPORT.GALLERY_SIZE`` best and worst images by the per-image score of
  the first evaluator that gives one (:mod:`d2seg.evaluation.per_image_scores`), each
  prediction beside its ground truth.

Modules: :mod:`.protocol` (what evaluators hand over), :mod:`.evaluator` (the wrapping
evaluator), :mod:`.gallery` (best / worst heaps and their drawing), :mod:`.page` and
:mod:`.panels` (the HTML). The evaluators see every image exactly as without the report; the
gallery's own time is logged and shown on the page. With ``TEST.REPORT.GALLERY`` off no
evaluator is asked for scores, so nothing is scored or kept.
"""

from d2seg.evaluation.report.evaluator import ASSETS, ReportEvaluator
from d2seg.evaluation.report.panels import ConfusionPanel, PrecisionRecallPanel, pr_curves
from d2seg.evaluation.report.protocol import (
    ClassTable,
    GalleryDrawing,
    GallerySink,
    Panel,
    ReportSource,
    ScoreDefinition,
    ScoredImage,
)

__all__ = [
    "ASSETS",
    "ClassTable",
    "ConfusionPanel",
    "GalleryDrawing",
    "GallerySink",
    "Panel",
    "PrecisionRecallPanel",
    "ReportEvaluator",
    "ReportSource",
    "ScoreDefinition",
    "ScoredImage",
    "pr_curves",
]
