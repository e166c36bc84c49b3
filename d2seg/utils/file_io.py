"""Atomic file writes: a reader (or a run killed midway) sees the old file or the new one,
never a half-written one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", durable: bool = False) -> Iterator[IO]:
    """Open a temporary file next to `path` for writing; on a clean exit it is renamed over
    `path` (`os.replace`, atomic on POSIX and Windows within one folder). `durable` also
    fsyncs it first, so that the rename survives a machine crash (checkpoints), not only a
    killed process.

    If the block raises, or the process dies inside it, `path` keeps its previous content (or
    stays absent) and the temporary file is removed (a killed process can leave a hidden
    ``.<name>.*.tmp`` file, never a truncated `path`). Works for json and text (``"w"``),
    PNG bytes, PIL's ``Image.save`` and ``torch.save`` (``"wb"``).
    """
    if not any(flag in mode for flag in "wx") or "+" in mode:
        raise ValueError(f"atomic_open({path!r}): mode must write a new file, got {mode!r}")
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    handle, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, mode.replace("x", "w")) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(partial, 0o644)  # mkstemp creates 0600; written files are world-readable
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def atomic_imwrite(path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """`cv2.imwrite` through :func:`atomic_open` (format from the extension; BGR order)."""
    ok, encoded = cv2.imencode(os.path.splitext(os.fspath(path))[1], image, list(params))
    if not ok:
        raise OSError(f"cannot encode an image of shape {image.shape} for {os.fspath(path)!r}")
    with atomic_open(path, "wb") as f:
        f.write(encoded.tobytes())


def atomic_json_dump(content: object, path: str | os.PathLike, **kwargs) -> None:
    """`json.dump(content, open(path, "w"), **kwargs)` through :func:`atomic_open`."""
    with atomic_open(path, "w") as f:
        json.dump(content, f, **kwargs)


@contextlib.contextmanager
def staged_output_dir(evaluator: object) -> Iterator[None]:
    """Run a block with ``evaluator._output_dir`` (Detectron2's evaluators write their result
    files there in place) pointed at a hidden staging folder inside it, then move each file
    written there over its final name with ``os.replace``. A run killed in the block leaves
    the previous complete files (and a hidden ``.staging-*`` folder), never truncated ones."""
    final = getattr(evaluator, "_output_dir", None)
    if not final:
        yield
        return
    os.makedirs(final, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=final)
    evaluator._output_dir = staging
    try:
        yield
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(final, name))
    finally:
        evaluator._output_dir = final
        shutil.rmtree(staging, ignore_errors=True)
