"""Detectron2's semantic-segmentation evaluator with atomic result files, feeding the report."""

from detectron2.evaluation import SemSegEvaluator

from d2seg.evaluation.gallery_items import semantic_gallery_item
from d2seg.evaluation.per_image_scores import SCORE_NAMES
from d2seg.evaluation.report.panels import ConfusionPanel
from d2seg.evaluation.report.protocol import Panel, ReportSource, ScoreDefinition
from d2seg.utils.file_io import staged_output_dir


class D2SegSemSegEvaluator(SemSegEvaluator, ReportSource):
    """Detectron2's ``SemSegEvaluator`` whose result files (``sem_seg_predictions.json``,
    ``sem_seg_evaluation.pth``) are written atomically; gives the report its confusion matrix
    and, when asked, each image's mIoU."""

    def process(self, inputs, outputs) -> None:
        super().process(inputs, outputs)
        self.score_images(self._dataset_name, inputs, outputs, semantic_gallery_item)

    def evaluate(self):
        with staged_output_dir(self):
            return super().evaluate()

    def per_image_score(self) -> ScoreDefinition:
        return ScoreDefinition("semantic", SCORE_NAMES["semantic"])

    def report_panels(self) -> list[Panel]:
        if getattr(self, "_conf_matrix", None) is None:
            return []
        # Detectron2 counts prediction by row, ground truth by column, ignore last
        confusion = self._conf_matrix[:-1, :-1].T
        return [ConfusionPanel("sem_seg", confusion, self._class_names)]
