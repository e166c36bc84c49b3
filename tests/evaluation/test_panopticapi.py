"""panopticapi (installed from panopticapi-lite without its numpy<2 pin) works under our numpy."""

import json
import shutil

import numpy as np
import pytest
from panopticapi.evaluation import pq_compute
from panopticapi.utils import rgb2id
from PIL import Image


def test_pq_compute_runs_under_installed_numpy(coco_sample, tmp_path):
    gt_json = coco_sample / "panoptic_examples.json"
    gt_folder = coco_sample / "panoptic_examples"
    perfect = pq_compute(str(gt_json), str(gt_json), str(gt_folder), str(gt_folder))
    assert perfect["All"]["pq"] == pytest.approx(1.0)
    assert perfect["All"]["n"] > 0

    # merge two segments of the first image into one: PQ must drop below 1
    content = json.loads(gt_json.read_text())
    annotation = content["annotations"][0]
    pred_folder = tmp_path / "pred"
    shutil.copytree(gt_folder, pred_folder)
    png = pred_folder / annotation["file_name"]
    rgb = np.asarray(Image.open(png).convert("RGB")).copy()
    first, second = annotation["segments_info"][:2]
    ids = rgb2id(rgb)
    rgb[ids == second["id"]] = rgb[ids == first["id"]][0]
    Image.fromarray(rgb).save(png)
    annotation["segments_info"] = [first] + annotation["segments_info"][2:]
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps(content))
    merged = pq_compute(str(gt_json), str(pred_json), str(gt_folder), str(pred_folder))
    assert merged["All"]["pq"] < 1.0
