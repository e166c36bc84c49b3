"""tools/plot_metrics.py: PNG plots of a metrics.json as Detectron2's JSONWriter writes it."""

import json

import numpy as np
import pytest
from PIL import Image

from d2seg.evaluation.training_curves import load_metrics, series, split_per_class
from tests.helpers.scripts import load_script


def _write_metrics(folder, records, tail=""):
    path = folder / "metrics.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


RECORDS = [
    {"iteration": 19, "total_loss": 3.0, "loss_cls": 1.0, "loss_mask": 0.7, "lr": 0.01},
    {"iteration": 39, "total_loss": 2.0, "loss_cls": 0.5, "loss_mask": 0.6, "lr": 0.02},
    {
        "iteration": 39,
        "bbox/AP": 10.0,
        "bbox/AP-traffic-light": 5.0,
        "sem_seg/mIoU": 40.0,
        "sem_seg/IoU-wall-other": float("nan"),
        "fast_rcnn/cls_accuracy": 0.9,  # a training statistic, not an evaluation metric
    },
    {"iteration": 59, "total_loss": 1.5, "loss_cls": 0.4, "loss_mask": 0.5, "lr": 0.02},
    {"iteration": 59, "bbox/AP": 20.0, "bbox/AP-traffic-light": 15.0, "sem_seg/mIoU": 50.0},
]


def test_plots_every_loss_and_metric(tmp_path):
    _write_metrics(tmp_path, RECORDS)
    written = load_script("tools/plot_metrics.py").main([str(tmp_path)])
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == ["eval_bbox.png", "eval_sem_seg.png", "losses.png"]
    for path in written:
        image = np.asarray(Image.open(path))
        assert image.ndim == 3 and min(image.shape[:2]) > 100
        assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10  # not blank
    assert all(p.startswith(str(tmp_path / "plots")) for p in written)


def test_series_keeps_iterations_and_skips_nan(tmp_path):
    data = series(load_metrics(str(_write_metrics(tmp_path, RECORDS))))
    assert data["total_loss"] == ([19, 39, 59], [3.0, 2.0, 1.5])
    assert data["bbox/AP-traffic-light"] == ([39, 59], [5.0, 15.0])
    assert "sem_seg/IoU-wall-other" not in data  # only NaN


def test_per_class_names_may_contain_dashes():
    assert split_per_class("IoU-wall-other-merged") == ("IoU", "wall-other-merged")
    assert split_per_class("AP-traffic light") == ("AP", "traffic light")
    assert split_per_class("AP50") is None and split_per_class("PQ_th") is None
    assert split_per_class("APp50") is None and split_per_class("AP-") is None


def test_a_line_being_written_is_skipped_but_a_bad_line_is_named(tmp_path):
    path = _write_metrics(tmp_path, RECORDS, tail='{"iteration": 79, "total_lo')
    assert len(load_metrics(str(path))) == len(RECORDS)
    path.write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.json, line 2"):
        load_metrics(str(path))
    path.write_text('{"total_loss": 1}\n{"iteration": 2}\n')
    with pytest.raises(ValueError, match=r"line 1: no 'iteration'"):
        load_metrics(str(path))


def test_missing_metrics_json_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script("tools/plot_metrics.py").main([str(tmp_path)])
    assert "metrics.json does not exist" in capsys.readouterr().err
