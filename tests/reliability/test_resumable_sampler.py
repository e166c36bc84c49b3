"""The resumable training sampler against Detectron2's aspect-ratio grouping."""

import functools
import itertools

import numpy as np
import pytest
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.data.samplers import TrainingSampler

from d2seg.engine import ResumableSampler
from d2seg.engine.data import _aspect_group

SIZES = [(640, 480), (480, 640), (500, 500), (800, 600), (600, 800), (300, 301), (301, 300)]


def _records(n):
    rng = np.random.default_rng(0)
    return [
        dict(zip(("width", "height"), SIZES[i]), index=k)
        for k, i in enumerate(rng.integers(len(SIZES), size=n))
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batches_are_those_of_detectron2_aspect_ratio_grouping(batch_size):
    records = _records(50)
    stream = list(itertools.islice(TrainingSampler(len(records), seed=3), 400))
    theirs = [
        [d["index"] for d in batch]
        for batch in AspectRatioGroupedDataset([records[i] for i in stream], batch_size)
    ]

    group = functools.partial(_aspect_group, records)  # squares (500 x 500) included
    ours = list(ResumableSampler(stream, batch_size, group).batches())
    assert ours == theirs and len(ours) > 100


def test_start_batch_skips_exactly_the_trained_batches():
    stream = list(range(40))
    sampler = ResumableSampler(stream, 4, lambda i: i % 3 == 0)
    batches = list(sampler.batches())
    sampler.start_batch = 3
    assert list(sampler) == [i for batch in batches[3:] for i in batch]
    without_groups = ResumableSampler(stream, 4)
    without_groups.start_batch = 2
    assert list(without_groups) == stream[8:]
    with pytest.raises(ValueError, match="batch_size"):
        ResumableSampler(stream, 0)
