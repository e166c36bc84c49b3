"""A training loader whose batches continue exactly where a resumed run stopped."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch.utils.data as torchdata
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.utils import comm
from PIL import Image

from d2seg.data.mappers.base import DatasetFileError

logger = logging.getLogger(__name__)
# metadata keys of Detectron2's and d2seg's registrations that name a dataset's files
_METADATA_FILES = ("json_file", "panoptic_json", "image_root", "panoptic_root", "sem_seg_root")


class ResumableSampler(torchdata.Sampler):
    """Groups the indices of a per-process training sampler into batches and can skip the
    batches a previous run already trained on.

    Batches are formed as Detectron2's ``AspectRatioGroupedDataset`` forms them (with
    `group_id(index)`: consecutive indices go to bucket 0 for landscape images, 1 otherwise,
    and a bucket that reaches `batch_size` becomes the next batch), but on indices, before any
    image is decoded: skipping ``start_batch`` batches then costs no image decoding, and the
    order does not depend on how data-loader workers interleave. Indices come out batch by
    batch, so Detectron2's loader, sharding chunks of `batch_size` over its workers in turn,
    yields exactly these batches in this order.
    """

    def __init__(
        self,
        sampler: Iterable[int],
        batch_size: int,
        group_id: Callable[[int], int] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._sampler = sampler
        self._batch_size = batch_size
        self._group_id = group_id
        self.start_batch = 0  # batches already trained on (set on resume, before iterating)

    def batches(self) -> Iterator[list[int]]:
        """Every batch from the first one, including those that `start_batch` skips."""
        buckets: dict[int, list[int]] = {}
        for index in self._sampler:
            bucket = buckets.setdefault(self._group_id(index) if self._group_id else 0, [])
            bucket.append(index)
            if len(bucket) == self._batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[int]:
        for batch in itertools.islice(self.batches(), self.start_batch, None):
            yield from batch


@contextlib.contextmanager
def dataset_named_on_error(names: Sequence[str]) -> Iterator[None]:
    """Re-raise a failure to load the datasets `names` (a missing root or annotation file,
    a truncated or invalid json, a category id not in its categories, no image left) as a
    :class:`DatasetFileError` naming the datasets and the files their metadata points to."""
    try:
        yield
    except (OSError, ValueError, KeyError, AssertionError) as error:  # Detectron2 asserts
        # on a dataset left empty by DATALOADER.FILTER_EMPTY_ANNOTATIONS
        described = []
        for name in names:
            metadata = MetadataCatalog.get(name)
            files = [f"{k}={metadata.get(k)!r}" for k in _METADATA_FILES if metadata.get(k)]
            described.append(f"{name!r} ({', '.join(files)})" if files else repr(name))
        raise DatasetFileError(
            f"cannot load dataset {', '.join(described)} (DETECTRON2_DATASETS="
            f"{os.environ.get('DETECTRON2_DATASETS', 'unset: ./datasets')}): "
            f"{type(error).__name__}: {error}"
        ) from error


@functools.cache
def _image_size(file_name: str) -> tuple[int, int]:
    with Image.open(file_name) as image:  # reads the header only
        return image.size


def _aspect_group(dataset: Sequence[dict], index: int) -> int:
    """AspectRatioGroupedDataset's bucket: 0 if wider than high, else 1. Records without
    width / height (panoptic registrations) are measured from the image header when sampled."""
    record = dataset[index]
    if "width" in record and "height" in record:
        width, height = record["width"], record["height"]
    else:
        width, height = _image_size(record["file_name"])
    return 0 if width > height else 1


def build_resumable_train_loader(
    cfg: CfgNode, mapper: Callable[[dict], dict] | None = None
) -> Iterable[list[dict]]:
    """Detectron2's ``build_detection_train_loader(cfg, mapper)`` (same datasets, filters and
    sampler, chosen by DATALOADER.SAMPLER_TRAIN), batched by a :class:`ResumableSampler`
    (returned as the loader's ``resumable_sampler``) and with its worker seeds drawn from SEED
    (when >= 0), not from the global torch RNG. Its batches are those of Detectron2's loader
    with 0 workers; with workers Detectron2 groups in arrival order, this loader does not."""
    with dataset_named_on_error(cfg.DATASETS.TRAIN):
        # the arguments Detectron2's loader derives from cfg, through its public @configurable
        args = build_detection_train_loader.from_config(cfg, mapper)
    sampler = args["sampler"]
    if sampler is None:  # an IterableDataset: it has its own order, nothing to resume
        return build_detection_train_loader(**args)
    world_size = comm.get_world_size()
    if args["total_batch_size"] % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={args['total_batch_size']} is not divisible by the "
            f"{world_size} processes"
        )
    group_id = functools.partial(_aspect_group, args["dataset"])
    args["sampler"] = ResumableSampler(
        sampler,
        args["total_batch_size"] // world_size,
        group_id if args["aspect_ratio_grouping"] else None,
    )
    args["aspect_ratio_grouping"] = False
    loader = build_detection_train_loader(**args, seed=cfg.SEED if cfg.SEED >= 0 else None)
    loader.resumable_sampler = args["sampler"]
    return loader
