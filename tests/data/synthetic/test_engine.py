"""The generation engine: writes a dataset once, atomically, and replaces only stale copies."""

import json

import pytest

from d2seg.data.synthetic.engine import (
    MANIFEST,
    SyntheticSplit,
    ensure_generated,
    is_current,
    splits_manifest,
)

MANIFEST_V1 = {"generator_version": 1}


class CountingWriter:
    """Writes two files per call and counts its calls; `fail_after_first_file` raises midway."""

    def __init__(self, content: str = "a", fail_after_first_file: bool = False):
        self.calls = 0
        self.content = content
        self.fail_after_first_file = fail_after_first_file

    def __call__(self, folder: str) -> None:
        self.calls += 1
        with open(f"{folder}/first.txt", "w") as f:
            f.write(self.content)
        if self.fail_after_first_file:
            raise RuntimeError("disk full")
        with open(f"{folder}/second.txt", "w") as f:
            f.write(self.content)


def test_second_call_is_a_no_op(tmp_path):
    write = CountingWriter()
    root = ensure_generated(str(tmp_path), "set", MANIFEST_V1, write)
    assert root == str(tmp_path / "set")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [
        "first.txt",
        MANIFEST,
        "second.txt",
    ]
    assert json.loads((tmp_path / "set" / MANIFEST).read_text()) == MANIFEST_V1
    assert ensure_generated(str(tmp_path), "set", MANIFEST_V1, write) == root
    assert write.calls == 1
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_failure_midway_leaves_nothing_half_written(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_generated(
            str(tmp_path), "set", MANIFEST_V1, CountingWriter(fail_after_first_file=True)
        )
    assert list(tmp_path.iterdir()) == []
    write = CountingWriter()  # the next call generates from scratch
    ensure_generated(str(tmp_path), "set", MANIFEST_V1, write)
    assert write.calls == 1 and is_current(str(tmp_path / "set"), MANIFEST_V1)


def test_failed_regeneration_keeps_the_old_copy(tmp_path):
    ensure_generated(str(tmp_path), "set", MANIFEST_V1, CountingWriter("old"))
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_generated(
            str(tmp_path), "set", {"generator_version": 2}, CountingWriter("new", True)
        )
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    assert (tmp_path / "set" / "first.txt").read_text() == "old"
    assert is_current(str(tmp_path / "set"), MANIFEST_V1)


def test_stale_copy_is_replaced(tmp_path):
    ensure_generated(str(tmp_path), "set", MANIFEST_V1, CountingWriter("old"))
    write = CountingWriter("new")
    ensure_generated(str(tmp_path), "set", {"generator_version": 2}, write)
    assert write.calls == 1 and (tmp_path / "set" / "first.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_missing_or_broken_manifest_is_not_current(tmp_path):
    assert not is_current(str(tmp_path), MANIFEST_V1)
    (tmp_path / MANIFEST).write_text("{not json")
    assert not is_current(str(tmp_path), MANIFEST_V1)


def test_splits_manifest_lists_each_split():
    splits = {"train": SyntheticSplit(3, 0), "val": SyntheticSplit(2, 1)}
    assert splits_manifest(7, splits) == {
        "generator_version": 7,
        "splits": {"train": {"num_images": 3, "seed": 0}, "val": {"num_images": 2, "seed": 1}},
    }
