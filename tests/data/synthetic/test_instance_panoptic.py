"""The synthetic instance/panoptic generator: deterministic, atomic, regenerated when stale."""

import pytest

from d2seg.data.synthetic import instance_panoptic


def test_generation_is_deterministic(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setattr(
        instance_panoptic, "SYNTHETIC_SPLITS", {"val": instance_panoptic.SYNTHETIC_SPLITS["val"]}
    )
    root = instance_panoptic.ensure_synthetic_dataset(str(tmp_path))
    for name in (
        "annotations/instances_val.json",
        "annotations/panoptic_val.json",
        "panoptic_val/val_000007.png",
    ):
        assert (tmp_path / instance_panoptic.SYNTHETIC_DIRNAME / name).read_bytes() == (
            synthetic_root / name
        ).read_bytes(), name
    assert root == str(tmp_path / instance_panoptic.SYNTHETIC_DIRNAME)


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(root, split, spec):
        (tmp_path / "marker").write_text(root)
        raise RuntimeError("disk full")

    monkeypatch.setattr(instance_panoptic, "write_split", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        instance_panoptic.ensure_synthetic_dataset(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker"]


def test_stale_copy_is_regenerated_and_current_copy_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(
        instance_panoptic, "SYNTHETIC_SPLITS", {"val": instance_panoptic.SyntheticSplit(3, 5)}
    )
    root = tmp_path / instance_panoptic.SYNTHETIC_DIRNAME
    instance_panoptic.ensure_synthetic_dataset(str(tmp_path))
    (root / "val" / "val_000001.jpg").write_bytes(b"kept")
    instance_panoptic.ensure_synthetic_dataset(str(tmp_path))  # current: untouched
    assert (root / "val" / "val_000001.jpg").read_bytes() == b"kept"
    monkeypatch.setattr(
        instance_panoptic, "GENERATOR_VERSION", instance_panoptic.GENERATOR_VERSION + 1
    )
    instance_panoptic.ensure_synthetic_dataset(str(tmp_path))  # stale: regenerated
    assert (root / "val" / "val_000001.jpg").read_bytes() != b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == [instance_panoptic.SYNTHETIC_DIRNAME]
