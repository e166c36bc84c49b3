"""Detectron2's DatasetMapper with errors that name the file at fault."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from detectron2.data import DatasetMapper
from PIL import Image


class DatasetFileError(OSError):
    """An image or annotation file of a dataset record cannot be read."""


def _unreadable_files(dataset_dict: dict) -> list[str]:
    """The files a record points to (image, semantic / panoptic PNGs) that PIL cannot decode."""
    bad = []
    for key in ("file_name", "sem_seg_file_name", "pan_seg_file_name"):
        path = dataset_dict.get(key)
        if path is None:
            continue
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as error:
            bad.append(f"{key}={path!r} ({type(error).__name__}: {error})")
    return bad


@contextlib.contextmanager
def files_named_on_error(dataset_dict: dict) -> Iterator[None]:
    """Turn a read failure inside the block into a :class:`DatasetFileError` that names the
    record's unreadable file(s); other errors pass through unchanged."""
    try:
        yield
    except (OSError, SyntaxError) as error:
        bad = _unreadable_files(dataset_dict)
        if not bad:
            raise
        raise DatasetFileError("cannot read " + "; ".join(bad)) from error


class D2SegDatasetMapper(DatasetMapper):
    """Detectron2's :class:`DatasetMapper`; a missing or corrupt file raises
    :class:`DatasetFileError` naming the file, instead of a bare PIL error."""

    def __call__(self, dataset_dict: dict) -> dict:
        with files_named_on_error(dataset_dict):
            return super().__call__(dataset_dict)
