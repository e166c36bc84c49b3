"""tools/demo.py: folders, globs and videos in, PNGs and MP4s out, unreadable inputs named.

Most tests swap Detectron2's predictor for one returning fabricated Mask Scoring outputs (the
drawing itself is tested in tests/utils/test_visualizer.py); one runs the script as a user does,
on a tiny randomly initialised Mask Scoring R-CNN.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from PIL import Image

from tests.helpers.configs import CONFIG_ROOT, CPU, TINY_RCNN
from tests.helpers.scripts import load_script, run_script

demo = load_script("tools/demo.py")
CONFIG = str(CONFIG_ROOT / "quickstart/mask_scoring_rcnn_R_18_FPN_synthetic.yaml")
FPS = 7.0


class FabricatedPredictor:
    """Stands in for DefaultPredictor: one circle with a mask score on every image."""

    def __init__(self, cfg, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, image_bgr: np.ndarray) -> dict:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("predictor failed")
        height, width = image_bgr.shape[:2]
        masks = torch.zeros(1, height, width, dtype=torch.bool)
        masks[0, 2:20, 2:20] = True
        instances = Instances(
            (height, width),
            pred_boxes=Boxes(torch.tensor([[2.0, 2, 20, 20]])),
            pred_masks=masks,
            pred_classes=torch.tensor([0]),
            scores=torch.tensor([0.9]),
            mask_scores=torch.tensor([0.8]),
        )
        return {"instances": instances}


@pytest.fixture
def fabricated(monkeypatch):
    monkeypatch.setattr(demo, "DefaultPredictor", FabricatedPredictor)


def _image(path: Path, value: int = 90, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


def _video(path: Path, frames: int = 10, size: tuple[int, int] = (48, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 60 + 15 * index, dtype=np.uint8))
    writer.release()
    return path


def _count_frames(path: Path) -> tuple[int, float]:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def _argv(inputs: list, output: Path) -> list[str]:
    return [
        "--config-file",
        CONFIG,
        "--input",
        *map(str, inputs),
        "--output",
        str(output),
        *CPU,
    ]


def test_folder_with_a_corrupt_image(fabricated, tmp_path, capsys):
    folder = tmp_path / "photos"
    good = [_image(folder / "a.png"), _image(folder / "b.jpg")]
    corrupt = folder / "c.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a JPEG" * 10)
    (folder / "notes.txt").write_text("not an image: skipped, not reported")
    out = tmp_path / "out"
    result = demo.run(_argv([folder], out))
    assert result.written == [str(out / "a.png"), str(out / "b.png")]
    assert list(result.unreadable) == [str(corrupt)]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no temporary left
    for written, source in zip(result.written, good):
        drawn = cv2.imread(written)
        assert drawn.shape == (32, 40, 3)  # instances only: no legend panel
        assert not (drawn == cv2.imread(str(source))).all()  # something was drawn
    captured = capsys.readouterr()
    assert f"cannot read {corrupt}: not a readable image" in captured.err
    assert "demo" in captured.err and "frame" in captured.err  # the tqdm bar
    assert f"wrote 2 of 3 to {out}; unreadable: {corrupt}" in captured.out
    assert demo.main(_argv([folder], tmp_path / "again")) == 1
    assert demo.main(_argv(good, tmp_path / "good")) == 0


def test_missing_empty_unmatched_and_corrupt_video_are_named(fabricated, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    good = _image(tmp_path / "good.png")
    empty_folder = tmp_path / "nothing"
    empty_folder.mkdir()
    inputs = [tmp_path / "missing.jpg", empty, f"{tmp_path}/*.webp", broken, empty_folder, good]
    result = demo.run(_argv(inputs, tmp_path / "out"))
    assert result.written == [str(tmp_path / "out" / "good.png")]
    assert result.unreadable == {
        f"{tmp_path}/*.webp": "no file matches this pattern",
        str(empty_folder): "no image or video in this folder",
        str(tmp_path / "missing.jpg"): "no such file",
        str(empty): "empty file (0 bytes)",
        str(broken): "OpenCV cannot open it as a video",
    }
    captured = capsys.readouterr()
    for path, reason in result.unreadable.items():
        assert f"cannot read {path}: {reason}" in captured.err
    assert "wrote 1 of 6" in captured.out


def test_video_in_video_out_same_frames_and_rate(fabricated, tmp_path):
    clip = _video(tmp_path / "clip.mp4")
    assert _count_frames(clip) == (10, FPS)
    out = tmp_path / "out"
    result = demo.run(_argv([clip, _image(tmp_path / "clip.png")], out))
    assert result.written == [str(out / "clip.mp4"), str(out / "clip.png")]
    assert _count_frames(out / "clip.mp4") == (10, FPS)
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
        48,
        32,
    )
    capture.release()
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip.png"]


def test_odd_sized_drawings_are_padded_not_cropped(fabricated, monkeypatch, tmp_path):
    """MPEG-4 frames need even sizes; OpenCV would silently drop an odd last row / column."""
    drawn = []

    def draw_odd(image_rgb, outputs, metadata, score_threshold):
        drawn.append(image_rgb[:-1, :-1])  # 47 x 31
        return drawn[-1]

    monkeypatch.setattr(demo, "draw_predictions", draw_odd)
    out = tmp_path / "out"
    demo.run(_argv([_video(tmp_path / "clip.mp4", frames=3)], out))
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape == (32, 48, 3)
    # the drawing is kept whole (up to compression) and the added column / row is black
    assert np.abs(frame[:31, :47].astype(int) - drawn[0][:, :, ::-1]).mean() < 8
    assert frame[:, 47].max() < 40 and frame[31].max() < 40


def test_a_run_failing_midway_leaves_no_video_under_the_final_name(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "DefaultPredictor", lambda cfg: FabricatedPredictor(cfg, 5))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="predictor failed"):
        demo.run(_argv([_video(tmp_path / "clip.mp4")], out))
    assert list(out.iterdir()) == []


def test_a_frame_drawn_at_another_size_stops_the_video(fabricated, monkeypatch, tmp_path):
    sizes = iter([(32, 48), (32, 48), (34, 48)])
    monkeypatch.setattr(
        demo, "draw_predictions", lambda *args: np.zeros((*next(sizes), 3), dtype=np.uint8)
    )
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"frame 2 of .*clip.mp4.* drawn at \(48, 34\)"):
        demo.run(_argv([_video(tmp_path / "clip.mp4", frames=3)], out))
    assert list(out.iterdir()) == []


def test_glob_input_keeps_names_unique(fabricated, tmp_path):
    first, second = _image(tmp_path / "a" / "x.png"), _image(tmp_path / "b" / "x.png")
    _image(tmp_path / "a" / "y.jpg")
    out = tmp_path / "out"
    result = demo.run(_argv([f"{tmp_path}/*/x.png", first], out))
    assert result.written == [str(out / "x.png"), str(out / "x_1.png"), str(out / "x_2.png")]
    assert not result.unreadable
    taken = {"x.png", "x_1.png"}
    assert demo.unique_name(str(second), ".png", taken) == "x_2.png"
    assert "x_2.png" in taken


def test_output_must_be_a_folder(tmp_path, capsys):
    a_file = _image(tmp_path / "a.png")
    for output in (a_file, tmp_path / "overlay.png"):
        with pytest.raises(SystemExit):
            demo.parse_args(_argv([a_file], output))
        assert f"--output '{output}'" in capsys.readouterr().err


def test_command_line_exit_status_with_a_real_tiny_model(tmp_path):
    """Mask Scoring R-CNN, random weights: one image drawn, one corrupt named, status 1."""
    folder = tmp_path / "in"
    _image(folder / "good.png", size=(96, 64))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    tiny = TINY_RCNN + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "INPUT.MIN_SIZE_TEST", "64"]
    code, log = run_script(
        "tools/demo.py",
        "--confidence-threshold",
        "0.0",
        "--config-file",
        CONFIG,
        "--input",
        str(folder),
        "--output",
        str(out),
        *tiny,
    )
    assert code == 1, log[-3000:]
    assert f"cannot read {folder / 'bad.png'}: not a readable image" in log
    assert f"wrote 1 of 2 to {out}; unreadable: {folder / 'bad.png'}" in log
    assert cv2.imread(str(out / "good.png")).shape == (64, 96, 3)


def test_real_mask_scoring_panoptic_fpn_outputs_draw_in_three_panels(tmp_path):
    """A tiny random MaskScoringPanopticFPN: its real outputs (panoptic_seg with segments_info,
    instances with mask_scores, sem_seg) give three panels, two legends, mask-score labels."""
    from detectron2.data import MetadataCatalog
    from detectron2.engine import DefaultPredictor

    from d2seg.config import load_config
    from d2seg.utils.visualizer import draw_predictions, instance_labels, legend_width

    config = CONFIG_ROOT / "quickstart/panoptic_fpn_mask_scoring_R_18_synthetic.yaml"
    tiny = TINY_RCNN + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "INPUT.MIN_SIZE_TEST", "64"]
    cfg = load_config(str(config), tiny + ["MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"])
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    outputs = DefaultPredictor(cfg)(image)
    assert {"panoptic_seg", "instances", "sem_seg"} <= set(outputs)
    instances = outputs["instances"]
    assert len(instances) and instances.has("mask_scores")
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    labels = instance_labels(instances, metadata.thing_classes)
    assert all(" (mask " in label for label in labels)
    drawn = draw_predictions(image[:, :, ::-1], outputs, metadata, score_threshold=0.0)
    names = metadata.thing_classes + metadata.stuff_classes
    legends = legend_width(64, "panoptic", names) + legend_width(
        64, "semantic", metadata.stuff_classes
    )
    assert drawn.shape == (64, 3 * 96 + legends, 3)
