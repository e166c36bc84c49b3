"""Distributed runs on CPU over gloo: 2 single-process machines on 127.0.0.1 through
Detectron2's `launch`, one process holding an image without foreground, and evaluation under 2
processes equal to evaluation in 1 process."""

import contextlib
import json
import re
import socket
import subprocess
import sys

import pytest

from tests.helpers.configs import TINY_RCNN, TINY_SEM_SEG
from tests.helpers.scripts import REPO_ROOT, run_script
from tests.reliability.coco_subset import make_coco_subset

CONFIG = "configs/quickstart/mask_scoring_rcnn_R_18_FPN_synthetic.yaml"
NAME = "d2seg_reliability_coco"
RUN = TINY_RCNN + [
    "SEED",
    "0",
    "DATASETS.TRAIN",
    f"('{NAME}',)",
    "DATASETS.TEST",
    f"('{NAME}',)",
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
    "False",  # keep the image without annotations
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "2",  # one image per process
    "SOLVER.MAX_ITER",
    "1",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "96",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "96",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",  # an untrained model still yields detections to evaluate
    # no running statistics: with BN each process ends training with its own
    # (docs/running_at_scale.md), and its end-of-training evaluation uses them
    "MODEL.RESNETS.NORM",
    "FrozenBN",
]


@pytest.fixture(scope="module")
def coco(synthetic_root, tmp_path_factory):
    """Two images, the second without annotations: every iteration of a 2-process run gives
    one process the image without foreground (each takes one index of each permutation)."""
    root = tmp_path_factory.mktemp("coco")
    json_file = make_coco_subset(root, 2, empty=(1,))
    return ["--coco", NAME, str(json_file), str(root / "images")]


def _copypaste(log):
    """Detectron2's `copypaste:` result lines (task, metric names, values)."""
    return re.findall(r"copypaste: (.*)", log)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_on_two_machines(coco, output_dir):
    """`--num-machines 2` with one process each, both on 127.0.0.1 (two terminals' worth)."""
    url = f"tcp://127.0.0.1:{_free_port()}"
    with contextlib.ExitStack() as logs:
        machines = [
            subprocess.Popen(
                [
                    sys.executable,
                    "tests/reliability/train_net_on_coco.py",
                    *coco,
                    "--num-machines",
                    "2",
                    "--machine-rank",
                    str(rank),
                    "--dist-url",
                    url,
                    "--config-file",
                    CONFIG,
                    *RUN,
                    "OUTPUT_DIR",
                    str(output_dir),
                ],
                cwd=REPO_ROOT,
                stdout=logs.enter_context(open(output_dir / f"machine{rank}.log", "w")),
                stderr=subprocess.STDOUT,
            )
            for rank in (0, 1)
        ]
        codes = [machine.wait(timeout=300) for machine in machines]
    return codes, [(output_dir / f"machine{rank}.log").read_text() for rank in (0, 1)]


def test_two_machines_with_an_empty_image_train_and_evaluate_as_one_process(coco, tmp_path):
    """Two single-process machines over gloo (the path of `--num-gpus 2`, whose processes
    Detectron2's `launch` starts the same way; tests/tools/test_train_net.py runs that one)."""
    codes, (log, log_rank1) = _train_on_two_machines(coco, tmp_path)
    assert codes == [0, 0], log[-2000:] + log_rank1[-2000:]
    assert "World size: 2" in log and (tmp_path / "log.txt.rank1").is_file()
    assert "loss_maskiou" in log
    assert (tmp_path / "model_final.pth").is_file()  # written by machine 0 only
    two_processes = _copypaste(log)
    assert any(line.startswith("Task: segm") for line in two_processes)

    code, log = run_script(
        "tests/reliability/train_net_on_coco.py",
        *coco,
        "--eval-only",
        "--config-file",
        CONFIG,
        *RUN,
        "MODEL.WEIGHTS",
        str(tmp_path / "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "one_process"),
    )
    assert code == 0, log[-3000:]
    assert _copypaste(log) == two_processes
    # and the same predictions, detection by detection
    written = sorted(p.name for p in (tmp_path / "inference" / NAME).glob("*.json"))
    assert written
    for name in written:
        one = json.loads((tmp_path / "one_process" / "inference" / NAME / name).read_text())
        assert json.loads((tmp_path / "inference" / NAME / name).read_text()) == one, name


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        # GeneralizedRCNN with ParsingROIHeads and the ParsingIoU head
        (
            "configs/quickstart/parsing_rcnn_R_18_FPN_synthetic.yaml",
            [*TINY_RCNN, "MODEL.PARSINGIOU_ON", "True", "SOLVER.IMS_PER_BATCH", "2"],
        ),
        # MaskScoringPanopticFPN: semantic branch + MaskIoU head
        (
            "configs/quickstart/panoptic_fpn_mask_scoring_R_18_synthetic.yaml",
            [*TINY_RCNN, "SOLVER.IMS_PER_BATCH", "2"],
        ),
        # D2SegSemanticSegmentor (PSPNet with its auxiliary FCN head); 2 images per process,
        # as BN cannot normalise PSPNet's 1x1 pooling bin over a single image
        (
            "configs/quickstart/pspnet_R_18_synthetic.yaml",
            [*TINY_SEM_SEG, "SOLVER.IMS_PER_BATCH", "4"],
        ),
    ],
    ids=["parsing_rcnn", "panoptic_fpn_mask_scoring", "pspnet"],
)
def test_num_gpus_2_trains_every_meta_architecture(config, overrides, synthetic_root, tmp_path):
    """`--num-gpus 2` on CPU for the meta-architectures not run in 2 processes elsewhere
    (Mask Scoring R-CNN above, Panoptic-DeepLab in tests/tools/test_train_net.py): DDP raises
    when a parameter gets no gradient, so 2 iterations passing is the check."""
    code, log = run_script(
        "tools/train_net.py",
        "--num-gpus",
        "2",
        "--config-file",
        config,
        *overrides,
        "SOLVER.MAX_ITER",
        "2",
        "DATASETS.TEST",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "INPUT.MIN_SIZE_TRAIN",
        "(96,)",
        "INPUT.MAX_SIZE_TRAIN",
        "128",
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert code == 0, log[-3000:]
    assert "World size: 2" in log and (tmp_path / "log.txt.rank1").is_file()
    assert (tmp_path / "model_final.pth").is_file()
