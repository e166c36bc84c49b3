"""`benchmarks/eval_speed.py` runs end to end on a few images and its own parity checks hold:
every PQ evaluator (Detectron2's, d2seg's with each pixel counter, hotcoco's two ways in) gives
panopticapi's TP / FP / FN, and every AP engine pycocotools' AP. No timing is asserted."""

import json

from tests.helpers.scripts import run_script


def test_benchmark_runs_and_its_checks_hold():
    code, output = run_script("benchmarks/eval_speed.py", "--images", "6", "--detections", "4")
    assert code == 0, output[-3000:]
    checks, _ = json.JSONDecoder().raw_decode(output.split("checks:", 1)[1].lstrip())
    assert checks["PQ"]["TP/FP/FN identical to panopticapi"] == {
        "d2seg": True,
        "panopticapi": True,
        "hotcoco files": True,
        "hotcoco RLE": True,
    }
    pq = list(checks["PQ"]["PQ"].values())  # Detectron2's and every d2seg variant
    assert max(pq) - min(pq) < 1e-9
    assert (
        checks["PQ"]["max |PQ/SQ/RQ difference| d2seg (every variant) vs Detectron2 (percent)"]
        < 1e-9
    )
    ap = checks["AP"]["max |AP difference| vs pycocotools (percent, all keys incl. per class)"]
    assert max(ap.values()) < 1e-9  # summation order only
    assert "faster than Detectron2's evaluator" in output
