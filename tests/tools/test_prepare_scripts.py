"""datasets/prepare_*.py on the real COCO sample."""

import json
import shutil

import numpy as np
import pytest
from panopticapi.utils import rgb2id
from PIL import Image

from d2seg.data.panoptic_utils import panoptic_to_stuff_semantic
from tests.helpers.scripts import load_script

prepare_fpn = load_script("datasets/prepare_coco_panoptic_fpn.py")


@pytest.fixture
def coco_root(coco_sample, tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(coco_sample / "panoptic_examples.json", root / "annotations/panoptic_val2017.json")
    shutil.copytree(coco_sample / "panoptic_examples", root / "panoptic_val2017")
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_panoptic_fpn_stuff_pngs(coco_root, coco_sample, workers, capsys):
    prepare_fpn.main(
        ["--coco-root", str(coco_root), "--splits", "val2017", "--workers", str(workers)]
    )
    assert "stuff PNGs" in capsys.readouterr().err  # tqdm progress
    panoptic = json.loads((coco_sample / "panoptic_examples.json").read_text())
    for annotation in panoptic["annotations"]:
        written = np.asarray(
            Image.open(coco_root / "panoptic_stuff_val2017" / annotation["file_name"])
        )
        ids = rgb2id(
            np.asarray(
                Image.open(coco_sample / "panoptic_examples" / annotation["file_name"]).convert(
                    "RGB"
                )
            )
        )
        expected = panoptic_to_stuff_semantic(
            ids, annotation["segments_info"], panoptic["categories"]
        )
        assert np.array_equal(written, expected)
        assert written.max() == 255 or written.max() <= 53
    assert not list((coco_root / "panoptic_stuff_val2017").glob("*.partial.png"))


def test_panoptic_fpn_names_bad_json(coco_root):
    (coco_root / "annotations/panoptic_val2017.json").write_text('{"images": []}')
    with pytest.raises(KeyError, match="panoptic_val2017.json"):
        prepare_fpn.main(["--coco-root", str(coco_root), "--splits", "val2017"])


def test_panoptic_fpn_names_bad_png(coco_root):
    first = sorted((coco_root / "panoptic_val2017").glob("*.png"))[0]
    first.write_bytes(b"not a png")
    with pytest.raises(OSError, match=first.name):
        prepare_fpn.main(["--coco-root", str(coco_root), "--splits", "val2017", "--workers", "1"])
