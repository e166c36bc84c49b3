"""Pixel-pair counting for panoptic quality: the (ground-truth segment, predicted segment)
pixel counts of one image, from which every TP / FP / FN and IoU of panopticapi's rules follows
(:func:`d2seg.evaluation.panoptic_evaluation.image_pq_stats`).

Two interchangeable counters, the same counts:

- :class:`NumbaPairCounter` (``numba`` installed, the ``fast-eval`` extra): one compiled pass
  over the ground-truth PNG's bytes as OpenCV decoded them and the predicted id map, mapping
  each run of equal ids to its segment through a lookup table and counting the pair;
- :class:`NumpyPairCounter`: the same in whole-array NumPy / OpenCV steps (decode to ids,
  table gather for both maps, one histogram over combined indices), about 2.5x the work.

Segment ids are numbered as :class:`SegmentIndexer` numbers them: 0 any id that ``segments_info``
does not list, 1 VOID (id 0), ``2 + i`` the ``i``-th listed id.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from typing import Protocol

import cv2
import numpy as np

ID_LIMIT = 1 << 24
"""Segment ids are 24-bit: the COCO panoptic PNG stores id = R + 256 G + 256^2 B."""
FLOAT32_EXACT = 1 << 24
"""Pixel counts below this are exact in float32 (OpenCV's histogram counts in float32)."""
MAX_SEGMENTS = np.iinfo(np.uint16).max - 2
"""Segments listed per image and side: their indices are uint16."""


# ------------------------------------------------------------------------ PNG in and out
def read_panoptic_png(path: str) -> np.ndarray:
    """The (H, W, 3 or 4) uint8 BGR(A) pixels of a COCO-format panoptic PNG, as OpenCV reads
    them (no conversion); raises naming `path` when it is unreadable or not 8-bit RGB(A)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"cannot read the panoptic PNG {path!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f"{path!r} is not an 8-bit RGB(A) panoptic PNG: {image.dtype} {image.shape}"
        )
    return image


def decode_panoptic_png(path: str, scratch: ScratchArrays | None = None) -> np.ndarray:
    """The (H, W) segment ids of a COCO-format panoptic PNG (panopticapi's ``rgb2id``; an alpha
    channel is ignored, as there): uint32, or intp in ``scratch`` (reused; valid until the
    next call with it)."""
    image = read_panoptic_png(path)
    code = cv2.COLOR_BGR2RGBA if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    if scratch is None:
        ids = cv2.cvtColor(image, code).view("<u4")[..., 0]  # bytes R, G, B, A: one LE word
        ids &= ID_LIMIT - 1
        return ids
    rgba = cv2.cvtColor(image, code, dst=scratch.get("rgba", (*image.shape[:2], 4), np.uint8))
    ids = scratch.get("gt_ids", image.shape[:2], np.intp)
    return np.bitwise_and(rgba.view("<u4")[..., 0], ID_LIMIT - 1, out=ids)


def encode_panoptic_png(ids: np.ndarray) -> bytes:
    """PNG bytes of a segment-id map (panopticapi's ``id2rgb``; ids must lie in [0, 2^24))."""
    words = np.ascontiguousarray(ids, dtype="<u4").view(np.uint8).reshape(*ids.shape, 4)
    ok, png = cv2.imencode(".png", words[..., 2::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ids.shape} panoptic map as PNG")
    return png.tobytes()


# ------------------------------------------------------------------------- shared pieces
class ScratchArrays:
    """Work arrays reused from image to image, grown to the largest image seen. In a
    per-image loop, fresh multi-megabyte arrays are mapped from the OS and fault in page by
    page; measured on this project's 2-core VM that cost 9 ms per 640 x 480 image, 4x the
    arithmetic (``benchmarks/eval_speed.py``)."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised `shape` array named `name`: the previous one's memory if it fits."""
        size = int(np.prod(shape))
        flat = self._flat.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self._flat[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)


class PairCounter(Protocol):
    """Counts the pixels of every (ground-truth index, predicted index) pair of one image.

    :meth:`read_ground_truth` and :meth:`prepare` may be called on another thread than
    :meth:`count` (they use separate work arrays). Their results live in the counter's work
    arrays until the next call of the same method; a caller that reads one image while it
    counts another alternates two counters."""

    name: str

    def read_ground_truth(self, path: str) -> np.ndarray:
        """The ground truth of a panoptic PNG, in the form :meth:`count` takes."""

    def prepare(self, pred_ids: np.ndarray, keys: np.ndarray, largest: int, where: str):
        """What :meth:`count` takes of a predicted id map (ids in [0, `largest`] and in
        [0, 2^24)) whose ``segments_info`` lists `keys`. Raises naming `where` when the map
        holds an id that `keys` lack."""

    def count(self, ground_truth, gt_keys, prediction, pred_keys, where) -> np.ndarray:
        """The (G + 2, P + 2) int64 pixel counts. `ground_truth`: a :meth:`read_ground_truth`
        result or an (H, W) id map. Raises naming `where` when the prediction holds an id that
        `pred_keys` lack."""


def _unlisted_error(where: str, pred_ids: np.ndarray, keys: np.ndarray) -> KeyError:
    unlisted = np.setdiff1d(np.unique(pred_ids), np.append(keys, 0))
    return KeyError(
        f"{where}: segment ids {unlisted.tolist()} are in the map but not in segments_info"
    )


# ------------------------------------------------------------------------ NumPy / OpenCV
class SegmentIndexer:
    """Maps segment ids to their indices times ``step`` (which must keep them below 2^16) with
    one 2^24-entry uint16 lookup table (32 MB, zero-filled by the OS on first use: only the pages
    of ids actually seen are ever mapped, a few per image; cleared after each call): one gather
    per map instead of a sort. Ids must lie in [0, 2^24).

    With ``slot``, the result is a :class:`ScratchArrays` array of that name, valid until the
    next call with the same slot."""

    def __init__(self) -> None:
        self._table: np.ndarray | None = None
        self.scratch = ScratchArrays()

    @contextlib.contextmanager
    def _listing(self, listed: np.ndarray, step: int) -> Iterator[np.ndarray]:
        """The table with VOID at ``step``, ``listed[i]`` at ``(2 + i) * step`` and every other
        id at 0, for the duration of the block."""
        if len(listed) > MAX_SEGMENTS or (len(listed) + 1) * step > np.iinfo(np.uint16).max:
            raise ValueError(
                f"{len(listed)} segments in one image: at most {MAX_SEGMENTS} are supported"
            )
        if self._table is None:
            self._table = np.zeros(ID_LIMIT, np.uint16)
        self._table[0] = step
        self._table[listed] = np.arange(2, len(listed) + 2) * step
        try:
            yield self._table
        finally:
            self._table[listed] = 0
            self._table[0] = 0

    def __call__(
        self,
        ids: np.ndarray,
        listed: np.ndarray,
        step: int = 1,
        slot: str | None = None,
        largest: int | None = None,
    ) -> np.ndarray:
        with self._listing(listed, step) as table:
            if slot is None:
                return np.take(table, ids)
            if largest is None:
                largest = int(ids.max()) if ids.size else 0
            if ids.size > 0 and largest < 256:  # e.g. Detectron2's 1..N ids
                small = self.scratch.get("ids_uint8", ids.shape, np.uint8)
                np.copyto(small, ids, casting="unsafe")
                out = self.scratch.get(slot, ids.shape, np.uint16)
                return cv2.LUT(small, table[:256], dst=out)  # 8-bit lookup: no gather
            if ids.dtype != np.intp:  # np.take would cast into a fresh array
                converted = self.scratch.get("ids", ids.shape, np.intp)
                np.copyto(converted, ids)
                ids = converted
            out = self.scratch.get(slot, ids.shape, np.uint16)
            return np.take(table, ids, out=out, mode="clip")  # "raise" would buffer


class NumpyPairCounter:
    """Whole-array steps: the ground truth decoded to ids, both maps gathered through the id
    table, the two indices combined in uint16 and histogrammed by OpenCV."""

    name = "NumPy + OpenCV"

    def __init__(self) -> None:
        self._indexer = SegmentIndexer()
        self._gt_scratch = ScratchArrays()  # the reading thread's own work arrays

    def read_ground_truth(self, path: str) -> np.ndarray:
        return decode_panoptic_png(path, self._gt_scratch)

    def prepare(self, pred_ids, keys, largest, where) -> np.ndarray:
        index = self._indexer(pred_ids, keys, slot="pred_index", largest=largest)
        if index.size and not index.all():  # index 0: an id that segments_info does not list
            raise _unlisted_error(where, pred_ids, keys)
        return index

    def count(self, ground_truth, gt_keys, prediction, pred_keys, where) -> np.ndarray:
        if ground_truth.ndim == 3:
            raise ValueError(f"{where}: NumpyPairCounter takes ground-truth ids, not pixels")
        shape = (len(gt_keys) + 2, len(pred_keys) + 2)
        bins = shape[0] * shape[1]
        if bins <= 1 << 16:  # the usual case: combined in uint16, 4x less traffic
            pairs = self._indexer(ground_truth, gt_keys, step=shape[1], slot="gt_index")
            pairs += prediction
            if 0 < pairs.size < FLOAT32_EXACT and pairs.ndim == 2:
                # OpenCV's uint16 histogram is ~4x faster than np.bincount, which first casts
                # every index to intp; unit-width bins from 0 put integer v in bin v, and
                # float32 counts are exact below 2^24 pixels
                counts = cv2.calcHist([pairs], [0], None, [bins], [0, bins])
                return counts.astype(np.int64).reshape(shape)
        else:
            pairs = self._indexer(ground_truth, gt_keys).astype(np.intp)
            pairs *= shape[1]
            pairs += prediction
        return np.bincount(pairs.ravel(), minlength=bins).reshape(shape)


# --------------------------------------------------------------------------------- numba
def _count_pairs(pixels, red, green, blue, pred, gt_keys, gt_order, pred_keys, pred_order, counts):
    """Add every pixel's (ground-truth index, predicted index) pair to ``counts``.

    ``pixels`` (H, W, C) uint8 holds the ground-truth id's bytes R, G, B at channels ``red``,
    ``green``, ``blue``; ``pred`` (H, W) the predicted ids. ``*_keys`` are the listed ids
    sorted, ``*_order`` their positions in ``segments_info``. An id is looked up (binary
    search) only where it differs from its left neighbour's; an id outside the listed ones
    (any value: nothing is indexed by it) counts in column 0."""

    def index_of(keys, order, value):
        low, high = 0, len(keys)
        while low < high:
            middle = (low + high) // 2
            if keys[middle] < value:
                low = middle + 1
            else:
                high = middle
        if low < len(keys) and keys[low] == value:
            return order[low] + 2
        return 1 if value == 0 else 0  # VOID, or an id not listed

    height, width = pred.shape
    last_gt, gt_index, last_pred, pred_index = -1, 0, -1, 0
    for y in range(height):
        for x in range(width):
            gt = (
                np.int64(pixels[y, x, red])
                | (np.int64(pixels[y, x, green]) << 8)
                | (np.int64(pixels[y, x, blue]) << 16)
            )
            if gt != last_gt:
                gt_index = index_of(gt_keys, gt_order, gt)
                last_gt = gt
            value = np.int64(pred[y, x])
            if value != last_pred:
                pred_index = index_of(pred_keys, pred_order, value)
                last_pred = value
            counts[gt_index, pred_index] += 1


@functools.cache
def compiled_pair_kernel():
    """:func:`_count_pairs` compiled by numba for its one signature (C-contiguous uint8
    pixels, int32 predicted ids), or None where numba is not installed. Compiled once per
    installation and cached on disk (numba's cache: beside this file, or the user's cache
    folder), then loaded when the first evaluator is built, not at its first image."""
    try:
        import numba
    except ImportError:
        return None
    keys = numba.int64[::1]
    signature = numba.void(
        numba.uint8[:, :, ::1],
        numba.int64,
        numba.int64,
        numba.int64,
        numba.int32[:, ::1],
        keys,
        keys,
        keys,
        keys,
        numba.int64[:, ::1],
    )
    try:
        return numba.njit(signature, nogil=True, cache=True)(_count_pairs)
    except RuntimeError:  # numba finds no writable cache folder: compile for this process only
        return numba.njit(signature, nogil=True)(_count_pairs)


def _sorted_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable").astype(np.int64)
    return np.ascontiguousarray(keys[order], dtype=np.int64), order


class NumbaPairCounter:
    """One compiled pass over the ground-truth PNG's decoded bytes and the predicted map
    (:func:`_count_pairs`): no id map, index map or histogram input is ever built, and no
    lookup table (a binary search over the ~30 listed ids per run of equal ids)."""

    name = "numba kernel"

    def __init__(self) -> None:
        self._kernel = compiled_pair_kernel()
        if self._kernel is None:
            raise ImportError("NumbaPairCounter needs numba: pip install 'd2seg[fast-eval]'")
        if sys.byteorder != "little":
            raise RuntimeError("NumbaPairCounter reads id maps as little-endian bytes")
        self._scratch = ScratchArrays()

    def read_ground_truth(self, path: str) -> np.ndarray:
        return read_panoptic_png(path)  # a fresh array

    def prepare(self, pred_ids, keys, largest, where) -> np.ndarray:
        """The map itself where it is C-contiguous int32 (Detectron2's ``panoptic_seg``: held
        until the next ``process()`` call counts it, as Detectron2's evaluators hold their
        outputs), else an int32 copy (which holds every id in [0, 2^24), checked by the
        caller)."""
        if pred_ids.dtype == np.int32 and pred_ids.flags.c_contiguous:
            return pred_ids
        copy = self._scratch.get("pred", pred_ids.shape, np.int32)
        np.copyto(copy, pred_ids, casting="unsafe")
        return copy

    def count(self, ground_truth, gt_keys, prediction, pred_keys, where) -> np.ndarray:
        if ground_truth.ndim == 3:  # OpenCV's B, G, R(, A)
            pixels, red, green, blue = ground_truth, 2, 1, 0
        else:  # an id map: its little-endian bytes R, G, B (ids above 2^24 lose the rest)
            ids = np.ascontiguousarray(ground_truth, dtype="<u4")
            pixels, red, green, blue = ids.view(np.uint8).reshape(*ids.shape, 4), 0, 1, 2
        if max(len(gt_keys), len(pred_keys)) > MAX_SEGMENTS:
            raise ValueError(f"{where}: at most {MAX_SEGMENTS} segments per image are supported")
        counts = np.zeros((len(gt_keys) + 2, len(pred_keys) + 2), np.int64)
        self._kernel(
            np.ascontiguousarray(pixels),
            red,
            green,
            blue,
            prediction,  # prepare()'s C-contiguous int32
            *_sorted_keys(gt_keys),
            *_sorted_keys(pred_keys),
            counts,
        )
        if counts[:, 0].any():
            raise _unlisted_error(where, prediction, pred_keys)
        return counts


def make_pair_counter(backend: str = "auto") -> PairCounter:
    """``"numba"``, ``"numpy"``, or ``"auto"``: numba where installed, else NumPy."""
    if backend == "auto":
        backend = "numba" if compiled_pair_kernel() is not None else "numpy"
    if backend == "numba":
        return NumbaPairCounter()
    if backend == "numpy":
        return NumpyPairCounter()
    raise ValueError(f"unknown panoptic counting backend {backend!r}: auto, numba or numpy")
