"""tools/train_net.py and tools/demo.py end to end, as a user runs them (subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers.scripts import REPO_ROOT, load_script, run_script

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml"
TINY = [
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",  # an untrained model still yields detections
]


def _train_net(*args):
    return run_script("tools/train_net.py", "--config-file", QUICKSTART, *args)


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """Two iterations of training with evaluation at the end."""
    output = tmp_path_factory.mktemp("train_net")
    code, log = _train_net("OUTPUT_DIR", str(output), "SOLVER.MAX_ITER", "2", *TINY)
    assert code == 0, log[-3000:]
    return output, log


def test_train_writes_checkpoint_metrics_events_and_evaluates(trained):
    output, log = trained
    assert (output / "model_final.pth").is_file()
    assert (output / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert list(output.glob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in m for m in metrics)
    assert "copypaste: Task: bbox" in log and "copypaste: Task: segm" in log
    results = output / "inference" / "d2seg_synthetic_instance_val" / "coco_instances_results.json"
    assert results.is_file()


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    output, _ = trained
    code, log = _train_net(
        "--resume", "OUTPUT_DIR", str(output), "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()", *TINY
    )
    assert code == 0, log[-3000:]
    assert "Starting training from iteration 2" in log
    iterations = [
        json.loads(line).get("iteration")
        for line in (output / "metrics.json").read_text().splitlines()
    ]
    assert max(iterations) == 3


def test_eval_only(trained):
    output, _ = trained
    code, log = _train_net(
        "--eval-only",
        "OUTPUT_DIR",
        str(output / "eval"),
        "MODEL.WEIGHTS",
        str(output / "model_final.pth"),
        *TINY,
    )
    assert code == 0, log[-3000:]
    assert "copypaste: Task: segm" in log
    assert (
        output
        / "eval"
        / "inference"
        / "d2seg_synthetic_instance_val"
        / "coco_instances_results.json"
    ).is_file()


def test_unknown_key_fails_naming_it(tmp_path):
    code, log = _train_net("OUTPUT_DIR", str(tmp_path), "MODEL.NOT_A_KEY", "1")
    assert code != 0 and "MODEL.NOT_A_KEY" in log


def test_demo_writes_overlays(trained, tmp_path):
    output, _ = trained
    demo = load_script("tools/demo.py")
    written = demo.run(
        [
            "--config-file",
            str(REPO_ROOT / QUICKSTART),
            "--dataset",
            "d2seg_synthetic_instance_val",
            "--num-images",
            "2",
            "--output",
            str(tmp_path),
            "--confidence-threshold",
            "0.0",
            "MODEL.WEIGHTS",
            str(output / "model_final.pth"),
            *TINY,
        ]
    ).written
    assert len(written) == 2
    for path in written:
        overlay = np.asarray(Image.open(path))
        assert overlay.ndim == 3 and overlay.shape[2] == 3 and overlay.shape[0] >= 224


def test_demo_names_unreadable_input(trained, tmp_path):
    output, _ = trained
    missing = tmp_path / "missing.jpg"
    result = load_script("tools/demo.py").run(
        [
            "--config-file",
            str(REPO_ROOT / QUICKSTART),
            "--input",
            str(missing),
            "--output",
            str(tmp_path / "out"),
            "MODEL.WEIGHTS",
            str(output / "model_final.pth"),
        ]
    )
    assert result.unreadable == {str(missing): "no such file"} and not result.written


def test_two_processes_on_cpu_with_naive_sync_bn(synthetic_root, tmp_path):
    """`--num-gpus 2` on CPU: two processes over gloo, BN statistics synced by naiveSyncBN."""
    config = "configs/quickstart/panoptic_deeplab_R_18_synthetic.yaml"
    sync = [
        "MODEL.RESNETS.NORM",
        "naiveSyncBN",
        "MODEL.SEM_SEG_HEAD.NORM",
        "naiveSyncBN",
        "MODEL.INS_EMBED_HEAD.NORM",
        "naiveSyncBN",
    ]
    result = subprocess.run(
        [
            sys.executable,
            "tools/train_net.py",
            "--num-gpus",
            "2",
            "--config-file",
            config,
            "OUTPUT_DIR",
            str(tmp_path),
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MIN_SIZE_TRAIN",
            "(128,)",
            "INPUT.MAX_SIZE_TRAIN",
            "192",
            *sync,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "world size: 2" in log.lower() or "Rank of current process: 1" in log
    assert (tmp_path / "model_final.pth").is_file()


def test_demo_draws_panoptic_deeplab_outputs(synthetic_root, tmp_path):
    """Panoptic maps in label-divisor form (segments_info None) draw through the same demo."""
    demo = load_script("tools/demo.py")
    written = demo.run(
        [
            "--config-file",
            str(REPO_ROOT / "configs/quickstart/panoptic_deeplab_R_18_synthetic.yaml"),
            "--dataset",
            "d2seg_synthetic_panoptic_val",
            "--num-images",
            "1",
            "--output",
            str(tmp_path),
        ]
    ).written
    image = np.asarray(Image.open(written[0]))
    assert image.ndim == 3 and image.shape[0] >= 224
