#!/usr/bin/env python
"""Run a config and its weights on images and videos and draw every output of the model.

    python tools/demo.py --config-file CONFIG --input a.jpg photos/ 'shots/*.png' clip.mp4 \
        --output out/ MODEL.WEIGHTS w.pth
    python tools/demo.py --config-file CONFIG --dataset d2seg_synthetic_instance_val \
        --num-images 4 --output out/ MODEL.WEIGHTS w.pth

Inputs are image files, folders (their images and videos, sorted by name), quoted glob
patterns and video files (by extension, read with OpenCV). Each image gives a PNG in
`--output`, each video an MP4 with the same frame rate and frame count. Inputs that cannot be
read are named on stderr and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from tqdm import tqdm

from d2seg.config import load_config
from d2seg.utils.file_io import atomic_imwrite
from d2seg.utils.visualizer import draw_predictions

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
VIDEO_CODEC = "mp4v"  # MPEG-4 part 2: written by every OpenCV build with FFmpeg
FALLBACK_FPS = 30.0  # for a video whose container declares no frame rate


class Unreadable(Exception):
    """An input that cannot be read; the message says why."""


@dataclass
class DemoResult:
    """What a run wrote and which inputs (path or pattern -> reason) it could not read."""

    written: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", help="image / video files, folders, quoted glob patterns"
    )
    source.add_argument("--dataset", help="a registered dataset: draw its first images")
    parser.add_argument("--num-images", type=int, default=4, help="with --dataset")
    parser.add_argument("--output", required=True, help="folder for the PNG / MP4 drawings")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output!r} is a file; it must be a folder")
    if not os.path.isdir(args.output) and _extension(args.output) in _KNOWN_EXTENSIONS:
        parser.error(f"--output {args.output!r} looks like a file name; it must be a folder")
    return args


def expand_inputs(patterns: list[str]) -> tuple[list[str], dict[str, str]]:
    """The files named by `patterns` in order (a folder gives its images and videos sorted by
    name, a glob pattern its matches sorted; other paths are kept as they are, to be read or
    reported), and the patterns or folders that match nothing, with the reason."""
    files, unmatched = [], {}
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(pattern, name)
                for name in os.listdir(pattern)
                if _extension(name) in _KNOWN_EXTENSIONS
            )
            reason = "no image or video in this folder"
        elif any(c in pattern for c in "*?[") and not os.path.exists(pattern):
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            reason = "no file matches this pattern"
        else:
            found, reason = [pattern], ""
        files += found
        if not found:
            unmatched[pattern] = reason
    return files, unmatched


def read_image_or_explain(path: str) -> np.ndarray:
    """The BGR image at `path` (EXIF orientation applied, as in training); raises
    :class:`Unreadable` for a missing, empty or undecodable file."""
    _check_file(path)
    try:
        return read_image(path, format="BGR")
    except (OSError, SyntaxError, ValueError) as error:
        raise Unreadable(f"not a readable image ({error})") from error


def unique_name(path: str, extension: str, taken: set[str]) -> str:
    """`path`'s stem + `extension`, with ``_1``, ``_2``... appended when an earlier input of
    this run took that name; the name is added to `taken`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, count = stem + extension, 0
    while name in taken:
        count += 1
        name = f"{stem}_{count}{extension}"
    taken.add(name)
    return name


def write_video(
    path: str, target: str, draw: Callable[[np.ndarray], np.ndarray], progress: tqdm
) -> None:
    """Draw every frame of the video at `path` and write them to the MP4 `target` at the same
    frame rate, one progress step per frame. The frames go to a hidden temporary file renamed to
    `target` at the end, so a run killed midway never leaves a partial video under its name."""
    capture = _open_video(path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not fps > 0:  # the container declares no frame rate (0 or NaN)
        fps = FALLBACK_FPS
    folder, name = os.path.split(target)
    partial = os.path.join(folder, f".{name}.partial.mp4")  # OpenCV picks MP4 by the extension
    writer, frames = None, 0
    try:
        for frame in _frames(capture):
            drawn = _pad_to_even(draw(frame))
            size = (drawn.shape[1], drawn.shape[0])
            if writer is None:
                writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*VIDEO_CODEC), fps, size)
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {partial!r} with codec {VIDEO_CODEC}")
                first_size = size
            elif size != first_size:
                raise RuntimeError(f"frame {frames} of {path!r} drawn at {size}, not {first_size}")
            writer.write(drawn)
            frames += 1
            progress.update()
        if writer is None:
            raise Unreadable("OpenCV decodes no frame of it")
        writer.release()
        os.replace(partial, target)
    except BaseException:
        if writer is not None:
            writer.release()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    finally:
        capture.release()


def run(argv: list[str] | None = None) -> DemoResult:
    """Draw every input; see the module docstring."""
    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if args.dataset:
        files = [d["file_name"] for d in DatasetCatalog.get(args.dataset)[: args.num_images]]
        metadata, unmatched = MetadataCatalog.get(args.dataset), {}
    else:
        files, unmatched = expand_inputs(args.input)
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    result = DemoResult(unreadable=dict(unmatched))
    for pattern, reason in result.unreadable.items():
        _report(pattern, reason)
    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)

    def draw(image_bgr: np.ndarray) -> np.ndarray:
        drawn = draw_predictions(
            image_bgr[:, :, ::-1], predictor(image_bgr), metadata, args.confidence_threshold
        )
        return drawn[:, :, ::-1]

    taken: set[str] = set()
    total = sum(_frame_count(p) if _is_video(p) else 1 for p in files)
    with tqdm(total=total, desc="demo", unit="frame", file=sys.stderr) as progress:
        for path in files:
            try:
                if _is_video(path):
                    target = os.path.join(args.output, unique_name(path, ".mp4", taken))
                    write_video(path, target, draw, progress)
                else:
                    image = read_image_or_explain(path)
                    target = os.path.join(args.output, unique_name(path, ".png", taken))
                    atomic_imwrite(target, draw(image))
                    progress.update()
            except Unreadable as error:
                result.unreadable[path] = str(error)
                _report(path, str(error))
                continue
            result.written.append(target)
    summary = f"wrote {len(result.written)} of {len(files) + len(unmatched)} to {args.output}"
    if result.unreadable:
        summary += "; unreadable: " + ", ".join(result.unreadable)
    print(summary)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: 0 when every input was drawn, 1 when some could not be read."""
    return 1 if run(argv).unreadable else 0


_KNOWN_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _is_video(path: str) -> bool:
    return _extension(path) in VIDEO_EXTENSIONS


def _report(path: str, reason: str) -> None:
    tqdm.write(f"cannot read {path}: {reason}", file=sys.stderr)


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise Unreadable("no such file")
    if os.path.getsize(path) == 0:
        raise Unreadable("empty file (0 bytes)")


def _open_video(path: str) -> cv2.VideoCapture:
    _check_file(path)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise Unreadable("OpenCV cannot open it as a video")
    return capture


def _frame_count(path: str) -> int:
    """The frame count the container declares (for the progress bar only), 0 if unknown."""
    capture = cv2.VideoCapture(path)
    count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    capture.release()
    return count


def _pad_to_even(image: np.ndarray) -> np.ndarray:
    """`image` with a black row / column added where its height / width is odd: MPEG-4 needs
    even frame sizes, and OpenCV's FFmpeg writer would silently drop the last row / column."""
    return np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)))


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


if __name__ == "__main__":
    sys.exit(main())
