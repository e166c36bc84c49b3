"""Kill and resume: a run killed with SIGKILL after its second checkpoint and resumed with
`--resume` ends with the same weights as a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time

import torch

from tests.helpers.configs import TINY_RCNN, resumable_schedule
from tests.helpers.scripts import REPO_ROOT, run_script

CONFIG = "configs/quickstart/mask_scoring_rcnn_R_18_FPN_synthetic.yaml"
# checkpoints after iterations 1 and 3 (fvcore saves when (iter + 1) % period == 0); the LR
# drops at 3 so that the schedule after the resume matters
RUN = TINY_RCNN + resumable_schedule(max_iter=6, checkpoint_period=2, warmup_iters=2)
RUN += ["SOLVER.STEPS", "(3,)", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128"]
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")  # two runs side by side, same arithmetic


def _start(output_dir, *flags):
    """Start a training run in the background; its log goes to OUTPUT_DIR.log (a pipe that
    nobody reads would block it)."""
    command = [sys.executable, "tools/train_net.py", *flags, "--config-file", CONFIG]
    with open(f"{output_dir}.log", "w") as log:
        return subprocess.Popen(
            [*command, *RUN, "OUTPUT_DIR", str(output_dir)],
            cwd=REPO_ROOT,
            env=ONE_THREAD,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _log(output_dir):
    return open(f"{output_dir}.log").read()[-3000:]


def _last_checkpoint(output_dir):
    tag = output_dir / "last_checkpoint"
    return tag.read_text() if tag.is_file() else None


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same_state(a, b, prefix=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), prefix
        for key in a:
            _assert_same_state(a[key], b[key], f"{prefix}/{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), prefix
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), prefix
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{prefix}/{i}")
    else:
        assert a == b, prefix


def test_sigkill_after_second_checkpoint_then_resume_equals_uninterrupted(synthetic_root, tmp_path):
    reference = _start(tmp_path / "uninterrupted")
    killed_dir = tmp_path / "killed"
    victim = _start(killed_dir)
    deadline = time.monotonic() + 240
    while _last_checkpoint(killed_dir) != "model_0000003.pth":
        assert victim.poll() is None, _log(killed_dir)
        assert time.monotonic() < deadline, "no second checkpoint"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "model_final.pth").exists(), "killed too late to test a resume"
    # the tag names a complete file
    assert _load(killed_dir / _last_checkpoint(killed_dir))["iteration"] == 3

    code, log = run_script(
        "tools/train_net.py",
        "--resume",
        "--config-file",
        CONFIG,
        *RUN,
        "OUTPUT_DIR",
        str(killed_dir),
        env=ONE_THREAD,
    )
    assert code == 0, log[-3000:]
    assert "Starting training from iteration 4" in log
    assert reference.wait(timeout=240) == 0, _log(tmp_path / "uninterrupted")

    resumed = _load(killed_dir / "model_final.pth")
    uninterrupted = _load(tmp_path / "uninterrupted" / "model_final.pth")
    assert resumed["iteration"] == uninterrupted["iteration"] == 5
    # weights, and the trainer's state: optimizer (momentum buffers), LR scheduler, iteration
    trainer = resumed["trainer"]
    assert "optimizer" in trainer["_trainer"] and "LRScheduler" in trainer["hooks"]
    for key in ("model", "trainer"):
        _assert_same_state(resumed[key], uninterrupted[key], key)
