"""The synthetic human-parsing generator: figures, determinism, atomic and stale-aware writes."""

import os

import numpy as np
import pytest

from d2seg.data.datasets.human_parsing import CIHP_FLIP_PAIRS, load_parsing_json
from d2seg.data.synthetic import parsing


def test_synthetic_left_parts_lie_on_the_figures_own_left():
    """Figures face the viewer: a left arm / leg / shoe lies right of its right twin in the
    image, so a horizontal flip must swap the ids."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        figure = parsing.draw_figure(rng, 256, 256)
        for left, right in CIHP_FLIP_PAIRS:
            xs_left, xs_right = np.nonzero(figure == left)[1], np.nonzero(figure == right)[1]
            assert xs_left.size > 10 and xs_right.size > 10
            assert xs_left.mean() > xs_right.mean()


def test_synthetic_generation_is_deterministic_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setattr(
        parsing,
        "SYNTHETIC_PARSING_SPLITS",
        {"val": parsing.SyntheticSplit(3, 11)},
    )
    first = parsing.ensure_synthetic_parsing_dataset(str(tmp_path / "a"))
    second = parsing.ensure_synthetic_parsing_dataset(str(tmp_path / "b"))
    for name in (
        "annotations/parsing_val.json",
        "parsing_val/0000002_1.png",
        "instance-level_human_parsing/Validation/Human_ids/0000003.png",
    ):
        assert (tmp_path / "a" / parsing.SYNTHETIC_PARSING_DIRNAME / name).read_bytes() == (
            tmp_path / "b" / parsing.SYNTHETIC_PARSING_DIRNAME / name
        ).read_bytes()
    assert first != second

    def broken(root, split, spec):
        raise RuntimeError("disk full")

    monkeypatch.setattr(parsing, "write_cihp_layout", broken)
    monkeypatch.setattr(parsing, "GENERATOR_VERSION", -1)
    with pytest.raises(RuntimeError, match="disk full"):
        parsing.ensure_synthetic_parsing_dataset(str(tmp_path / "a"))
    kept = tmp_path / "a" / parsing.SYNTHETIC_PARSING_DIRNAME
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [kept.name]  # old copy kept


def test_stale_synthetic_copy_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(
        parsing,
        "SYNTHETIC_PARSING_SPLITS",
        {"val": parsing.SyntheticSplit(2, 4)},
    )
    root = parsing.ensure_synthetic_parsing_dataset(str(tmp_path))
    marker = os.path.join(root, "annotations", "parsing_val.json")
    with open(marker, "w") as f:
        f.write("kept")
    write = parsing.write_cihp_layout
    monkeypatch.setattr(parsing, "write_cihp_layout", None)  # must not be called
    parsing.ensure_synthetic_parsing_dataset(str(tmp_path))  # current: untouched
    with open(marker) as f:
        assert f.read() == "kept"
    monkeypatch.setattr(parsing, "write_cihp_layout", write)
    monkeypatch.setattr(parsing, "GENERATOR_VERSION", parsing.GENERATOR_VERSION + 1)
    parsing.ensure_synthetic_parsing_dataset(str(tmp_path))  # stale: regenerated
    assert len(load_parsing_json(marker, root)) == 2
    assert [p.name for p in tmp_path.iterdir()] == [parsing.SYNTHETIC_PARSING_DIRNAME]
