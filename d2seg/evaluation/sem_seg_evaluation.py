"""Detectron2's semantic-segmentation evaluator with atomic result files."""

from detectron2.evaluation import SemSegEvaluator

from d2seg.utils.file_io import staged_output_dir


class D2SegSemSegEvaluator(SemSegEvaluator):
    """Detectron2's ``SemSegEvaluator`` whose result files (``sem_seg_predictions.json``,
    ``sem_seg_evaluation.pth``) are written atomically."""

    def evaluate(self):
        with staged_output_dir(self):
            return super().evaluate()
