"""Bad input: each fault gives one error naming the culprit (file, key, value) before anything
is trained or written."""

import contextlib
import copy
import json
import logging
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from d2seg.config import load_config
from d2seg.data import build_train_mapper
from d2seg.data.mappers.base import DatasetFileError
from d2seg.engine import D2SegCheckpointer, D2SegTrainer, build_resumable_train_loader
from tests.helpers.configs import CONFIG_ROOT, TINY_PANOPTIC_DEEPLAB, TINY_RCNN
from tests.helpers.scripts import run_script
from tests.reliability.coco_subset import make_coco_subset

CONFIG = str(CONFIG_ROOT / "quickstart" / "mask_rcnn_R_18_FPN_synthetic.yaml")
SMALL = TINY_RCNN + [
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "96",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
]


@pytest.fixture
def coco(synthetic_root, tmp_path):
    """A 2-image COCO dataset registered under a fresh name: (name, json path, images)."""
    json_file = make_coco_subset(tmp_path / "coco", 2)
    name = f"d2seg_test_{uuid.uuid4().hex}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path / "coco" / "images"))
    yield name, json_file, tmp_path / "coco" / "images"
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@contextlib.contextmanager
def _logged(logger_name):
    """The messages a logger emits inside the block (whatever its propagation)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _first_batch(dataset, *opts):
    cfg = load_config(CONFIG, SMALL + ["DATASETS.TRAIN", f"('{dataset}',)", *opts])
    return next(iter(build_resumable_train_loader(cfg, mapper=build_train_mapper(cfg))))


def _edit_json(json_file, edit):
    content = json.loads(json_file.read_text())
    edit(content)
    json_file.write_text(json.dumps(content))


def test_missing_dataset_root_is_named():
    # the builtin Cityscapes registration, with no cityscapes/ under DETECTRON2_DATASETS
    with pytest.raises(DatasetFileError, match=r"cityscapes_fine_instance_seg_train.*cityscapes"):
        _first_batch("cityscapes_fine_instance_seg_train")


JSON_DAMAGE = {
    "missing": lambda f: f.unlink(),
    "truncated": lambda f: f.write_text(f.read_text()[:-100]),
    "not_json": lambda f: f.write_text("<html>Not found</html>"),
    "unknown_category": lambda f: _edit_json(
        f, lambda c: c["annotations"][0].update(category_id=99)
    ),
}
IMAGE_DAMAGE = {
    "missing": lambda f: f.unlink(),
    "zero_bytes": lambda f: f.write_bytes(b""),
    "corrupt": lambda f: f.write_bytes(f.read_bytes()[:200]),
}


@pytest.mark.parametrize("damage", JSON_DAMAGE.values(), ids=JSON_DAMAGE.keys())
def test_broken_annotation_json_is_named(coco, damage):
    name, json_file, _ = coco
    damage(json_file)
    with pytest.raises(DatasetFileError, match=rf"{name}.*annotations\.json") as error:
        _first_batch(name)
    if "category" in str(error.value):
        assert "category_id=99" in str(error.value)


@pytest.mark.parametrize("damage", IMAGE_DAMAGE.values(), ids=IMAGE_DAMAGE.keys())
def test_broken_image_is_named(coco, damage):
    name, json_file, images = coco
    for image in images.iterdir():
        damage(image)
    with pytest.raises(DatasetFileError, match=r"train_00000[12]\.jpg"):
        _first_batch(name)


def test_image_size_differing_from_the_json_is_named(coco):
    name, json_file, _ = coco
    _edit_json(json_file, lambda c: [i.update(width=i["width"] + 1) for i in c["images"]])
    with pytest.raises(ValueError, match=r"train_00000[12]\.jpg"):
        _first_batch(name, "DATALOADER.ASPECT_RATIO_GROUPING", "False")


def test_polygons_with_fewer_than_three_points_are_dropped_and_counted(coco):
    name, json_file, _ = coco

    def two_point_polygons(content):
        for annotation in content["annotations"][:3]:
            annotation["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]

    _edit_json(json_file, two_point_polygons)
    with _logged("detectron2.data.datasets.coco") as messages:
        records = DatasetCatalog.get(name)
    assert any("Filtered out 3 instances without valid segmentation" in m for m in messages)
    total = len(json.loads(json_file.read_text())["annotations"])
    assert sum(len(r["annotations"]) for r in records) == total - 3


def test_panoptic_png_not_matching_segments_info_is_named(synthetic_root, tmp_path):
    cfg = load_config(
        str(CONFIG_ROOT / "quickstart" / "panoptic_deeplab_R_18_synthetic.yaml"),
        TINY_PANOPTIC_DEEPLAB,
    )
    record = copy.deepcopy(DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0])
    ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"])))
    ids[0, 0] = 4242  # a segment that segments_info does not list
    Image.fromarray(id2rgb(ids)).save(tmp_path / "broken.png")
    record["pan_seg_file_name"] = str(tmp_path / "broken.png")
    with pytest.raises(ValueError, match=r"broken\.png.*\[4242\] are in the PNG"):
        build_train_mapper(cfg)(record)
    ids[0, 0] = ids[0, 1]  # the map is whole again, but segments_info lists one more
    Image.fromarray(id2rgb(ids)).save(tmp_path / "broken.png")
    record["segments_info"].append(dict(record["segments_info"][0], id=4243))
    with pytest.raises(ValueError, match=r"broken\.png.*\[\] are in the PNG.*\[4243\] are in seg"):
        build_train_mapper(cfg)(record)


def test_config_errors_name_file_key_and_value(tmp_path):
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text(f'_BASE_: "{CONFIG}"\nMODEL:\n  ROI_MASKIOU_HEAD:\n    CONV_DIM: "wide"\n')
    with pytest.raises(
        ValueError, match=r"bad_type\.yaml.*wide.*MODEL\.ROI_MASKIOU_HEAD\.CONV_DIM"
    ):
        load_config(str(bad_type))
    with pytest.raises(ValueError, match=r"wide.*MODEL\.ROI_PARSING_HEAD\.CONV_DIM"):
        load_config(CONFIG, ["MODEL.ROI_PARSING_HEAD.CONV_DIM", "wide"])
    missing_base = tmp_path / "missing_base.yaml"
    missing_base.write_text('_BASE_: "Base-Nowhere.yaml"\n')
    with pytest.raises(FileNotFoundError, match=r"missing_base\.yaml.*Base-Nowhere\.yaml"):
        load_config(str(missing_base))
    with pytest.raises(KeyError, match=r"MODEL\.ROI_MASKIOU_HEAD\.NOT_A_KEY"):
        load_config(CONFIG, ["MODEL.ROI_MASKIOU_HEAD.NOT_A_KEY", "1"])


def test_weights_missing_or_of_another_architecture(synthetic_root, tmp_path):
    build = D2SegTrainer.build_model
    model = build(load_config(CONFIG, TINY_RCNN))
    with pytest.raises(FileNotFoundError, match="no_such_model.pth"):
        D2SegCheckpointer(model).load(str(tmp_path / "no_such_model.pth"))
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    checkpointer = D2SegCheckpointer(model)
    with (
        _logged(checkpointer.logger.name) as messages,
        pytest.raises(ValueError, match=r"no weight in .*other\.pth.* fits this model"),
    ):
        checkpointer.load(str(tmp_path / "other.pth"))
    log = "\n".join(messages)  # Detectron2's report of the mismatched keys
    assert "Some model parameters or buffers are not found" in log and "0.{bias, weight}" in log
    # a checkpoint that fits in part (a backbone alone) loads, as in Detectron2
    partial = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": partial}, tmp_path / "backbone.pth")
    D2SegCheckpointer(model).load(str(tmp_path / "backbone.pth"))


def test_train_net_exits_non_zero_naming_the_file_and_writes_no_checkpoint(coco, tmp_path):
    name, json_file, images = coco
    json_file.write_text(json_file.read_text()[:-100])
    code, log = run_script(
        "tests/reliability/train_net_on_coco.py",
        "--coco",
        name,
        str(json_file),
        str(images),
        "--config-file",
        CONFIG,
        *SMALL,
        "DATASETS.TRAIN",
        f"('{name}',)",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    )
    assert code != 0
    assert f"DatasetFileError: cannot load dataset '{name}' (json_file='{json_file}'" in log
    assert not list((tmp_path / "out").glob("*.pth"))
    assert not (tmp_path / "out" / "last_checkpoint").exists()


def test_empty_annotation_list_trains_and_evaluates(synthetic_root, tmp_path):
    """Images without a single annotation: with DATALOADER.FILTER_EMPTY_ANNOTATIONS False the
    model trains and evaluates to AP 0 without a crash (COCOeval alone would leave it
    undefined, -1); with the filter on (Detectron2's default) no image is left and the error
    names the dataset."""
    json_file = make_coco_subset(tmp_path / "coco", 2, empty=(0, 1))
    name = f"d2seg_test_{uuid.uuid4().hex}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path / "coco" / "images"))
    opts = SMALL + [
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        f"('{name}',)",
        "SOLVER.MAX_ITER",
        "1",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "96",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]
    try:
        with pytest.raises(DatasetFileError, match=rf"{name}.*No valid data found"):
            _first_batch(name)
        cfg = load_config(CONFIG, [*opts, "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False"])
        trainer = D2SegTrainer(cfg)
        trainer.train()
        results = trainer._last_eval_results
        assert set(results) == {"bbox", "segm"}
        assert all(v == 0 for task in results.values() for v in task.values()), results
        assert "AP50" in results["segm"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
