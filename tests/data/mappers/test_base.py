"""The default mapper: Detectron2's mapping, and errors that name the file at fault."""

import copy

import pytest
from detectron2.data import DatasetCatalog, DatasetMapper

from d2seg.config import load_config
from d2seg.data import build_test_mapper, build_train_mapper
from d2seg.data.mappers.base import D2SegDatasetMapper, DatasetFileError
from tests.helpers.configs import CONFIG_ROOT, CPU

QUICKSTART = str(CONFIG_ROOT / "quickstart" / "mask_rcnn_R_18_FPN_synthetic.yaml")


@pytest.fixture(scope="module")
def record(synthetic_root):
    return DatasetCatalog.get("d2seg_synthetic_instance_val")[0]


def test_default_mapper_maps_like_detectron2(record):
    cfg = load_config(
        QUICKSTART, CPU + ["INPUT.RANDOM_FLIP", "none", "INPUT.MIN_SIZE_TRAIN", "(256,)"]
    )
    ours = build_train_mapper(cfg)(copy.deepcopy(record))
    theirs = DatasetMapper(cfg, True)(copy.deepcopy(record))
    assert type(build_test_mapper(cfg)) is D2SegDatasetMapper
    assert (ours["image"] == theirs["image"]).all()
    assert len(ours["instances"]) == len([a for a in record["annotations"] if not a["iscrowd"]])


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_unreadable_image_is_named(record, tmp_path, damage):
    broken = dict(copy.deepcopy(record), file_name=str(tmp_path / "broken.jpg"))
    if damage == "corrupt":
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    mapper = build_train_mapper(load_config(QUICKSTART, CPU))
    with pytest.raises(DatasetFileError, match="broken.jpg"):
        mapper(broken)
