"""No lost results: files are replaced whole or not at all, by an exception, a kill during the
write, or a kill during a checkpoint save."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import d2seg.engine.checkpoint
from d2seg.engine import D2SegCheckpointer
from d2seg.utils.file_io import atomic_imwrite, atomic_json_dump, atomic_open, staged_output_dir
from tests.helpers.scripts import REPO_ROOT


def test_atomic_open_replaces_whole_files_and_keeps_the_old_one_on_error(tmp_path):
    target = tmp_path / "results.json"
    atomic_json_dump({"AP": 1.0}, target)
    assert json.loads(target.read_text()) == {"AP": 1.0}
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write('{"AP": 2')
        raise RuntimeError("killed midway")
    assert json.loads(target.read_text()) == {"AP": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left
    with pytest.raises(ValueError, match="mode"):
        atomic_open(target, "a").__enter__()


def test_atomic_imwrite_writes_a_readable_png(tmp_path):
    import cv2
    import numpy as np

    image = np.arange(60, dtype=np.uint8).reshape(5, 4, 3)
    atomic_imwrite(tmp_path / "a.png", image)
    assert (cv2.imread(str(tmp_path / "a.png")) == image).all()


def test_sigkill_during_a_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "predictions.json"
    target.write_text("previous complete output")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # the module alone, by path (importing d2seg would take seconds)
            "import importlib.util, sys, time\n"
            "spec = importlib.util.spec_from_file_location('file_io', sys.argv[2])\n"
            "file_io = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(file_io)\n"
            "with file_io.atomic_open(sys.argv[1], 'w') as f:\n"
            "    f.write('half of the new')\n"
            "    f.flush()\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n",
            str(target),
            str(REPO_ROOT / "d2seg" / "utils" / "file_io.py"),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert target.read_text() == "previous complete output"


def test_failed_checkpoint_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    checkpointer = D2SegCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)

    def torch_save_killed_midway(data, f):
        f.write(b"PK\x03\x04 the first bytes of a zip")
        raise KeyboardInterrupt  # what SIGINT / a dying process does inside torch.save

    monkeypatch.setattr(d2seg.engine.checkpoint.torch, "save", torch_save_killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000003", iteration=3)
    monkeypatch.undo()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert D2SegCheckpointer(model, str(tmp_path)).resume_or_load("")["iteration"] == 1


class _HalfWritingEvaluator:
    """Writes its result files into `_output_dir` in place, as Detectron2's evaluators do, and
    can fail after the first one."""

    def __init__(self, output_dir, fail):
        self._output_dir, self._fail = str(output_dir), fail

    def evaluate(self):
        with staged_output_dir(self):
            folder = Path(self._output_dir)
            (folder / "a.json").write_text("new a")
            if self._fail:
                raise RuntimeError("killed after writing a.json")
            (folder / "b.json").write_text("new b")


def test_staged_evaluator_outputs_are_replaced_whole_or_not_at_all(tmp_path):
    """Detectron2's COCO and semantic evaluators write in place; d2seg's subclasses stage the
    files and move each one over its final name only when the evaluation finished."""
    (tmp_path / "a.json").write_text("previous a")
    with pytest.raises(RuntimeError, match="killed"):
        _HalfWritingEvaluator(tmp_path, fail=True).evaluate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "previous a"
    evaluator = _HalfWritingEvaluator(tmp_path, fail=False)
    evaluator.evaluate()
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "b.json").is_file()
    assert evaluator._output_dir == str(tmp_path) and len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("name", ["FastCOCOEvaluator", "D2SegSemSegEvaluator"])
def test_detectron2_based_evaluators_stage_their_files(name, monkeypatch, tmp_path):
    """Their `evaluate` runs Detectron2's with `_output_dir` pointing at the staging folder."""
    import d2seg.evaluation as evaluation

    cls = getattr(evaluation, name)
    seen = []

    def fake_evaluate(self, *args):
        seen.append(self._output_dir)
        (Path(self._output_dir) / "results.json").write_text("{}")
        return {}

    monkeypatch.setattr(cls.__mro__[1], "evaluate", fake_evaluate)  # Detectron2's class
    evaluator = object.__new__(cls)
    evaluator._output_dir = str(tmp_path)
    evaluator.evaluate()
    assert seen[0] != str(tmp_path) and seen[0].startswith(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
