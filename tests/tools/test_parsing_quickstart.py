"""The Parsing R-CNN quickstart as a user runs it: tools/train_net.py trains a few iterations on
the synthetic human parsing and reports every parsing metric, --eval-only with test-time
augmentation evaluates again; tools/demo.py draws part maps."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.helpers.scripts import REPO_ROOT, load_script

QUICKSTART = "configs/quickstart/parsing_rcnn_R_18_FPN_synthetic.yaml"
# fmt: off
TINY = [
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "192",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_PARSING_HEAD.ASPP_DIM", "16",
    "MODEL.ROI_PARSING_HEAD.CONV_DIM", "32",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()",
    "DATALOADER.NUM_WORKERS", "0",
    "TEST.DETECTIONS_PER_IMAGE", "5",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",  # an untrained model still yields detections
]
# fmt: on


def _train_net(*args: str) -> None:
    """tools/train_net.py on the quickstart config with `args`; fails showing the log's end."""
    command = [sys.executable, "tools/train_net.py", "--config-file", QUICKSTART, *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_quickstart_trains_reports_parsing_metrics_and_draws(tmp_path):
    _train_net("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2", *TINY)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert any("loss_parsing" in m for m in metrics)
    reported = set().union(*metrics)
    assert {
        "parsing/mIoU",
        "parsing/APp50",
        "parsing/APpvol",
        "parsing/PCP50",
        "bbox/AP",
    } <= reported, sorted(reported)

    # --eval-only with test-time augmentation (flip) as well: a second evaluation, its own folder
    _train_net(
        "--eval-only",
        "OUTPUT_DIR",
        str(tmp_path),
        "MODEL.WEIGHTS",
        str(tmp_path / "model_final.pth"),
        *TINY,
        "TEST.AUG.ENABLED",
        "True",
        "TEST.AUG.MIN_SIZES",
        "(128,)",
        "TEST.AUG.MAX_SIZE",
        "192",
    )
    for folder in ("inference", "inference_TTA"):
        assert (tmp_path / folder / "d2seg_synthetic_parsing_val" / "report.html").is_file()

    result = load_script("tools/demo.py").run(
        [
            "--config-file",
            str(REPO_ROOT / QUICKSTART),
            "--dataset",
            "d2seg_synthetic_parsing_val",
            "--num-images",
            "1",
            "--output",
            str(tmp_path / "overlays"),
            "--confidence-threshold",
            "0.0",
            "MODEL.WEIGHTS",
            str(tmp_path / "model_final.pth"),
            *TINY,
        ]
    )
    overlay = np.asarray(Image.open(result.written[0]))
    assert overlay.ndim == 3 and overlay.shape[2] == 3
