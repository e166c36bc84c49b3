"""The human-parsing evaluator: hand-computed cases, a slow reference-style re-implementation on
random data (benchmarks/parsing_eval.py, which re-reads every PNG per detection and builds full
histograms as the authors' parsing_eval.py does), the process/gather path and the factory."""

import itertools
import json

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from detectron2.structures import Boxes, Instances
from PIL import Image

from d2seg.config import load_config
from d2seg.data.datasets.human_parsing import CIHP_CLASSES
from d2seg.evaluation import build_evaluator, build_parsing_evaluators
from d2seg.evaluation import parsing_evaluation as pe
from d2seg.evaluation.coco_backend import FastCOCOEvaluator
from d2seg.modeling.postprocessing.parsing import PartProbabilities
from tests.helpers.configs import CONFIG_ROOT, CPU
from tests.helpers.scripts import load_script

reference = load_script("benchmarks/parsing_eval.py")
C = len(CIHP_CLASSES)


def _paint(maps, size):
    painted = np.zeros(size, np.uint8)
    for part_map in maps:
        painted[part_map > 0] = part_map[part_map > 0]
    return painted


class Dataset:
    """Writes images' ground truth as PNGs, registers them, and runs the evaluator on given
    detections. An image: {"persons": [maps], "detections": [(map, score)], "semseg": map}
    (semseg defaults to the persons painted in order)."""

    def __init__(self, root, name):
        self.root, self.name, self.count = root, name, 0

    def write(self, images):
        self.count += 1
        name = f"{self.name}_{self.count}"
        records = []
        for image_id, image in enumerate(images):
            size = image["persons"][0].shape if image["persons"] else image["semseg"].shape
            semseg = image.get("semseg")
            semseg = _paint(image["persons"], size) if semseg is None else semseg
            stem = self.root / f"{self.count}_{image_id}"
            Image.fromarray(semseg).save(f"{stem}.png")
            files = []
            for k, person in enumerate(image["persons"]):
                Image.fromarray(person).save(f"{stem}_{k}.png")
                files.append(f"{stem}_{k}.png")
            annotations = [{"parsing_file_name": f} for f in files]
            records.append(
                {
                    "image_id": image_id,
                    "height": size[0],
                    "width": size[1],
                    "parsing_semseg_file_name": f"{stem}.png",
                    "annotations": annotations,
                }
            )
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(parsing_classes=list(CIHP_CLASSES))
        return name, records

    def evaluate(self, images, **kwargs):
        name, records = self.write(images)
        evaluator = pe.ParsingEvaluator(name, distributed=False, **kwargs)
        for record, image in zip(records, images):
            evaluator.process([{"image_id": record["image_id"]}], [_output(image, record)])
        return evaluator.evaluate()["parsing"]


def _output(image, record):
    maps = [m for m, _ in image["detections"]]
    scores = [s for _, s in image["detections"]]
    return reference.prediction_output(maps, scores, (record["height"], record["width"]))


@pytest.fixture
def dataset(tmp_path, request):
    data = Dataset(tmp_path, f"test_parsing_{request.node.name}")
    yield data
    for index in range(1, data.count + 1):
        DatasetCatalog.remove(f"{data.name}_{index}")
        MetadataCatalog.remove(f"{data.name}_{index}")


def _box(size, y0, y1, x0, x1, label):
    part_map = np.zeros(size, np.uint8)
    part_map[y0:y1, x0:x1] = label
    return part_map


# Hand-computed cases on 4 x 4 images.

HAT, LEFT_ARM, RIGHT_ARM = 1, 14, 15
PERSON = np.array([[1, 1, 1, 1], [15, 15, 14, 14], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
SWAPPED = np.array([[1, 1, 1, 1], [14, 14, 15, 15], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)


def test_perfect_prediction_scores_100(dataset):
    a, b = _box((4, 4), 0, 2, 0, 2, 2), _box((4, 4), 2, 4, 1, 4, 5)
    results = dataset.evaluate([{"persons": [a, b], "detections": [(a, 0.9), (b, 0.8)]}])
    for key in ("mIoU", "APp50", "APpvol", "PCP50", "pACC", "mACC", "APp90"):
        assert results[key] == pytest.approx(100.0), key
    assert np.isnan(results["IoU-hat"])  # in neither map: not counted


def test_one_swapped_part(dataset):
    """IoU: background 1, hat 1, left arm 0, right arm 0 -> mean exactly 0.5, which is not
    > 0.5: a true positive at t = 0.1 .. 0.4 only; PCP there: 1 of 3 parts (the hat)."""
    results = dataset.evaluate([{"persons": [PERSON], "detections": [(SWAPPED, 0.9)]}])
    assert results["mIoU"] == pytest.approx(50.0)
    assert results["IoU-left-arm"] == 0.0 and results["IoU-hat"] == 100.0
    assert results["APp40"] == 100.0 and results["APp50"] == 0.0
    assert results["APpvol"] == pytest.approx(100 * 4 / 9)
    assert results["PCP50"] == 0.0
    stats = pe.image_stats(
        0,
        (4, 4),
        [pe.PartMap(0, 0, SWAPPED)],
        np.array([0.9]),
        [pe.PartMap(0, 0, PERSON)],
        None,
        C,
        0.3,
    )
    _, pcp = pe.ap_and_pcp([stats], 0.001)
    np.testing.assert_allclose(pcp, [1 / 3] * 4 + [0] * 5)


def test_one_missed_person(dataset):
    """Two persons, one found: recall stops at 0.5 with precision 1 -> AP 0.5 everywhere.
    mIoU: background 8 / 12, class 2: 1, class 5: 0."""
    a, b = _box((4, 4), 0, 2, 0, 2, 2), _box((4, 4), 2, 4, 0, 2, 5)
    results = dataset.evaluate([{"persons": [a, b], "detections": [(a, 0.9)]}])
    assert results["APp50"] == 50.0 and results["APpvol"] == pytest.approx(50.0)
    assert results["PCP50"] == 50.0
    assert results["mIoU"] == pytest.approx(100 * (8 / 12 + 1 + 0) / 3)


@pytest.mark.parametrize(("false_score", "expected_ap"), [(0.9, 50.0), (0.7, 100.0)])
def test_false_positive_ranked_first(dataset, false_score, expected_ap):
    """A detection of nobody (in an image without persons) ranked above the true one halves
    VOC AP (precision 0.5 at recall 1); ranked below, it costs nothing."""
    a = _box((4, 4), 0, 2, 0, 2, 2)
    elsewhere = _box((4, 4), 0, 4, 0, 4, 5)
    results = dataset.evaluate(
        [
            {"persons": [a], "detections": [(a, 0.8)]},
            {
                "persons": [],
                "semseg": np.zeros((4, 4), np.uint8),
                "detections": [(elsewhere, false_score)],
            },
        ]
    )
    assert results["APp50"] == expected_ap and results["APp10"] == expected_ap
    assert results["PCP50"] == 100.0


@pytest.mark.parametrize("matching", pe.MATCHING_RULES)
def test_a_claimed_person_makes_later_matches_false_positives(dataset, matching):
    """The worse copy (mean IoU 0.6) outranks the exact one: at t = 0.5 it claims the person
    and the exact one is a false positive (AP 1); at t = 0.7 only the exact one passes, second
    in rank (AP 0.5). With one person, both matching rules agree."""
    person = _box((4, 4), 0, 2, 0, 4, 2)
    worse = _box((4, 4), 0, 1, 0, 4, 2)  # IoU: background 8/12, class 2: 4/8 -> 7/12
    results = dataset.evaluate(
        [{"persons": [person], "detections": [(worse, 0.9), (person, 0.8)]}], matching=matching
    )
    assert results["APp50"] == 100.0 and results["APp70"] == 50.0


@pytest.mark.parametrize(("matching", "expected_ap50"), [("unclaimed", 100.0), ("reference", 50.0)])
def test_a_detection_whose_best_person_is_claimed(dataset, matching, expected_ap50):
    """Two detections of `person` (rows 0-1); `taller` (rows 0-2) overlaps the second one by
    (background 4/8 + class 2: 8/12) / 2 = 7/12. The first claims `person`. Unclaimed matching
    gives the second to `taller` (a true positive at t = 0.5, not at 0.6); the reference keeps
    it on its best person, claimed, so it is a false positive at every threshold."""
    person = _box((4, 4), 0, 2, 0, 4, 2)
    taller = _box((4, 4), 0, 3, 0, 4, 2)
    images = [{"persons": [person, taller], "detections": [(person, 0.9), (person.copy(), 0.8)]}]
    results = dataset.evaluate(images, matching=matching)
    assert results["APp50"] == expected_ap50
    assert results["APp60"] == 50.0
    assert results["PCP50"] == expected_ap50  # the one part (class 2) of `taller`: IoU 2/3
    other = _box((4, 4), 2, 4, 0, 4, 5)
    worse = _box((4, 4), 0, 1, 0, 4, 2)
    results = dataset.evaluate(
        [{"persons": [person, other], "detections": [(person, 0.9), (worse, 0.8)]}],
        matching=matching,
    )
    assert results["APp50"] == 50.0  # `worse` overlaps `other` by 1/12 only: no match either way


def test_unknown_matching_rule_is_named(dataset):
    name, _ = dataset.write([{"persons": [PERSON], "detections": []}])
    with pytest.raises(ValueError, match="MATCHING: 'voc'"):
        pe.ParsingEvaluator(name, distributed=False, matching="voc")


def test_score_thresholds_are_inclusive(dataset):
    """Detections at exactly SEMSEG_SCORE_THRESH are painted, those below are not; those at
    exactly AP_SCORE_THRESH are ranked."""
    a = _box((4, 4), 0, 2, 0, 2, 2)
    painted = dataset.evaluate([{"persons": [a], "detections": [(a, 0.3)]}], ap_score_thresh=0.3)
    assert painted["mIoU"] == 100.0 and painted["APp50"] == 100.0
    skipped = dataset.evaluate([{"persons": [a], "detections": [(a, 0.2999)]}], ap_score_thresh=0.3)
    assert skipped["mIoU"] == pytest.approx(100 * (12 / 16 + 0) / 2)
    assert skipped["APp50"] == 0.0


def test_higher_scores_are_painted_on_top(dataset):
    person = _box((4, 4), 0, 4, 0, 4, 2)
    wrong = _box((4, 4), 0, 4, 0, 4, 5)
    for detections in ([(person, 0.9), (wrong, 0.5)], [(wrong, 0.5), (person, 0.9)]):
        results = dataset.evaluate([{"persons": [person], "detections": detections}])
        assert results["mIoU"] == 100.0 and np.isnan(results["IoU-upper-clothes"])  # hidden


@pytest.mark.parametrize(("count_empty", "expected"), [(True, (24 / 28 + 1 + 0) / 3), (False, 1)])
def test_images_without_detections(dataset, count_empty, expected):
    """Counted (the default), an image without detections predicts background everywhere:
    background 24 / 28, class 2: 1, class 5 (missed): 0. Left out (the reference), it does not
    touch mIoU. AP counts its person either way."""
    a = _box((4, 4), 0, 2, 0, 2, 2)
    b = _box((4, 4), 0, 4, 0, 1, 5)
    results = dataset.evaluate(
        [{"persons": [a], "detections": [(a, 0.9)]}, {"persons": [b], "detections": []}],
        count_empty_images=count_empty,
    )
    assert results["mIoU"] == pytest.approx(100 * expected)
    assert results["APp50"] == 50.0


def test_ignored_ground_truth_pixels_do_not_count(dataset):
    person = _box((4, 4), 0, 2, 0, 2, 2)
    semseg = person.copy()
    semseg[3, :] = 255
    bigger = person.copy()
    bigger[3, :] = 5  # predicted over ignored pixels only
    results = dataset.evaluate(
        [{"persons": [person], "semseg": semseg, "detections": [(bigger, 0.9)]}]
    )
    assert results["mIoU"] == 100.0 and np.isnan(results["IoU-upper-clothes"])


# Random data against the reference-style loop.


def _random_images(rng, num_images):
    """Images with 0-3 striped persons (some ground-truth pixels ignored) and detections that
    are shifted, partly relabelled copies of them, plus strays; scores with ties."""
    images = []
    for _ in range(num_images):
        size = tuple(int(v) for v in rng.integers(12, 28, size=2))
        persons = []
        for _ in range(rng.integers(0, 4)):
            y0, x0 = rng.integers(0, size[0] - 4), rng.integers(0, size[1] - 4)
            y1, x1 = y0 + rng.integers(3, size[0] - y0 + 1), x0 + rng.integers(3, size[1] - x0 + 1)
            person = np.zeros(size, np.uint8)
            stripes = np.array_split(np.arange(y0, y1), 3)
            for stripe, label in zip(stripes, rng.choice([2, 5, 9, 13, 14, 15], size=3)):
                person[stripe, x0:x1] = label
            if rng.random() < 0.3:
                person[y0, x0:x1] = 255
            persons.append(person)
        semseg = _paint(persons, size)
        semseg[rng.random(size) < 0.05] = 255
        detections = []
        for person in persons:
            for _ in range(rng.integers(0, 3)):
                guess = np.roll(person, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
                guess[guess == 255] = 0
                noise = (rng.random(size) < 0.1) & (guess > 0)
                guess[noise] = rng.choice([2, 5, 9, 14, 15], size=int(noise.sum()))
                detections.append((guess, float(rng.integers(1, 10)) / 10))
        if rng.random() < 0.4:  # a stray detection, partly outside everyone
            stray = np.zeros(size, np.uint8)
            stray[-5:, -6:] = rng.choice([1, 2, 13], size=(5, 6))
            detections.append((stray, float(rng.integers(1, 10)) / 10))
        images.append({"persons": persons, "semseg": semseg, "detections": detections})
    return images


@pytest.mark.parametrize(
    ("seed", "count_empty", "matching"),
    [
        (0, True, "unclaimed"),
        (1, False, "reference"),
        (2, True, "reference"),
        (3, True, "unclaimed"),
    ],
)
def test_random_data_matches_the_reference_style_loop(dataset, seed, count_empty, matching):
    images = _random_images(np.random.default_rng(seed), 14)
    assert any(not image["detections"] for image in images)
    name, records = dataset.write(images)
    evaluator = pe.ParsingEvaluator(
        name,
        distributed=False,
        semseg_score_thresh=0.3,
        count_empty_images=count_empty,
        matching=matching,
    )
    for record, image in zip(records, images):
        evaluator.process([{"image_id": record["image_id"]}], [_output(image, record)])
    results = evaluator.evaluate()["parsing"]
    expected = reference.reference_style_metrics(
        [
            {
                "parsings": [m for m, _ in image["detections"]],
                "scores": [s for _, s in image["detections"]],
                "semseg_file": record["parsing_semseg_file_name"],
                "person_files": [a["parsing_file_name"] for a in record["annotations"]],
            }
            for image, record in zip(images, records)
        ],
        C,
        0.3,
        0.001,
        count_empty,
        matching,
    )
    assert results["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-9)
    for t in pe.IOU_THRESHOLDS:
        key = f"APp{round(t * 100)}"
        assert results[key] == pytest.approx(expected[key], abs=1e-9), key
    assert results["PCP50"] == pytest.approx(expected["PCP50"], abs=1e-9)
    _, pcps = pe.ap_and_pcp(evaluator._stats, 0.001, matching)
    np.testing.assert_allclose(
        100 * pcps, [expected[f"PCP{round(t * 100)}"] for t in pe.IOU_THRESHOLDS], atol=1e-9
    )
    assert 0 < results["APp10"] < 100 and 0 < results["PCP50"] < 100  # not a trivial case


def test_part_iou_matches_full_histograms_near_borders():
    """Crops clipped at the image border, overlapping or not, with ignored pixels."""
    rng = np.random.default_rng(5)
    size = (9, 11)
    crops, fulls = [], []
    for _ in range(6):
        full = np.zeros(size, np.uint8)
        y0, x0 = rng.integers(0, 9), rng.integers(0, 11)
        full[y0:, x0:] = rng.choice([0, 2, 5, 255], size=(size[0] - y0, size[1] - x0))
        crops.append(pe.PartMap.tight(full))
        fulls.append(full)
    predictions = [pe.PartMap.tight(np.where(f == 255, 14, f).astype(np.uint8)) for f in fulls]
    iou = pe.part_iou(predictions, crops, size, C)
    for r, g in itertools.product(range(6), range(6)):
        pred = np.where(fulls[r] == 255, 14, fulls[r])
        expected, _ = reference._reference_iou(fulls[g], pred, C)
        np.testing.assert_allclose(iou[r, g], expected, atol=1e-12, err_msg=f"{r}, {g}")


# The evaluator as Detectron2 runs it.


def test_gathered_halves_give_the_single_process_result(dataset, monkeypatch):
    images = _random_images(np.random.default_rng(3), 10)
    name, records = dataset.write(images)
    whole = pe.ParsingEvaluator(name, distributed=False)
    halves = [pe.ParsingEvaluator(name) for _ in range(2)]
    for index, (record, image) in enumerate(zip(records, images)):
        output = _output(image, record)
        whole.process([{"image_id": record["image_id"]}], [output])
        halves[index % 2].process([{"image_id": record["image_id"]}], [output])
    monkeypatch.setattr(pe.comm, "gather", lambda data, dst: [halves[1]._stats, data])
    np.testing.assert_equal(halves[0].evaluate(), whole.evaluate())  # NaN == NaN here
    monkeypatch.setattr(pe.comm, "is_main_process", lambda: False)
    assert halves[0].evaluate() == {}


def _gt_as_probabilities(record):
    """Each person's part map cropped to its box and resized to 128 x 128, as probabilities."""
    probabilities, boxes = [], []
    for annotation in record["annotations"]:
        part_map = np.asarray(Image.open(annotation["parsing_file_name"]))
        x, y, w, h = (int(v) for v in annotation["bbox"])
        crop = torch.from_numpy(part_map[y : y + h, x : x + w].astype(np.int64))
        crop = torch.nn.functional.interpolate(
            crop[None, None].float(), size=(128, 128), mode="nearest"
        )[0, 0].long()
        probabilities.append(torch.nn.functional.one_hot(crop, C).permute(2, 0, 1).float())
        boxes.append([x, y, x + w, y + h])
    instances = Instances((record["height"], record["width"]))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.linspace(0.9, 0.5, len(boxes))
    instances.parsing_scores = instances.scores.clone()
    instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
    stacked = torch.stack(probabilities) if probabilities else torch.zeros((0, C, 128, 128))
    instances.pred_parsing = PartProbabilities(stacked)
    return {"instances": instances}


def test_synthetic_ground_truth_through_the_real_paste_back(tmp_path):
    """evaluator_type "parsing" builds this evaluator and d2seg's COCO box AP; ground
    truth pasted back through PartProbabilities scores near 100."""
    cfg = load_config(str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"), CPU)
    evaluator = build_evaluator(cfg, "d2seg_synthetic_parsing_val", str(tmp_path))
    assert isinstance(evaluator, DatasetEvaluators)
    assert [type(e) for e in evaluator._evaluators] == [pe.ParsingEvaluator, FastCOCOEvaluator]
    evaluator.reset()
    for record in DatasetCatalog.get("d2seg_synthetic_parsing_val"):
        inputs = [
            {
                "image_id": record["image_id"],
                "height": record["height"],
                "width": record["width"],
                "file_name": record["file_name"],
            }
        ]
        evaluator.process(inputs, [_gt_as_probabilities(record)])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["parsing"]["APp50"] == pytest.approx(100.0)
    assert results["parsing"]["mIoU"] > 80 and results["parsing"]["PCP50"] > 80
    assert (tmp_path / "parsing_results.json").is_file()


def test_factory_reads_only_test_keys(dataset, tmp_path):
    """A config without any MODEL key builds both evaluators, with the TEST.PARSING values."""
    name, _ = dataset.write([{"persons": [PERSON], "detections": []}])
    coco = {
        "images": [{"id": 0, "height": 4, "width": 4, "file_name": "0.jpg"}],
        "annotations": [],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    MetadataCatalog.get(name).set(json_file=str(tmp_path / "coco.json"))
    cfg = CfgNode(
        {
            "TEST": {
                "PARSING": {
                    "SEMSEG_SCORE_THRESH": 0.05,
                    "AP_SCORE_THRESH": 0.01,
                    "COUNT_EMPTY_IMAGES": False,
                    "MATCHING": "reference",
                },
                "EVAL_BACKEND": "pycocotools",
            }
        }
    )
    parsing, boxes = build_parsing_evaluators(cfg, name, None)
    assert isinstance(boxes, FastCOCOEvaluator) and boxes._tasks == ("bbox",)
    assert (parsing._semseg_score_thresh, parsing._ap_score_thresh) == (0.05, 0.01)
    assert parsing._count_empty_images is False and parsing._matching == "reference"
    assert boxes._eval_backend == "pycocotools"


def test_config_defaults():
    cfg = load_config(str(CONFIG_ROOT / "Base-RCNN-FPN.yaml"), CPU)
    assert cfg.TEST.PARSING.SEMSEG_SCORE_THRESH == 0.3
    assert cfg.TEST.PARSING.AP_SCORE_THRESH == 0.001
    assert cfg.TEST.PARSING.COUNT_EMPTY_IMAGES is True
    assert cfg.TEST.PARSING.MATCHING == "unclaimed"
    assert pe.IOU_THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_errors_name_what_is_wrong(dataset, tmp_path):
    name, records = dataset.write([{"persons": [PERSON], "detections": []}])
    evaluator = pe.ParsingEvaluator(name, distributed=False)
    output = _output({"detections": [(PERSON, 0.5)]}, records[0])
    del output["instances"]._fields["parsing_scores"]
    with pytest.raises(KeyError, match="parsing_scores"):
        evaluator.process([{"image_id": 0}], [output])
    with pytest.raises(KeyError, match="image 7 is not in dataset"):
        evaluator.process([{"image_id": 7}], [output])
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(records[0]["parsing_semseg_file_name"])
    with pytest.raises(ValueError, match=r"0\.png.*\(5, 4\).*\(4, 4\)"):
        evaluator.process([{"image_id": 0}], [_output({"detections": [(PERSON, 0.5)]}, records[0])])
    too_many = _output({"detections": [(np.full((4, 4), C, np.uint8), 0.5)]}, records[0])
    with pytest.raises(ValueError, match=f"part id {C} predicted.* has {C} parsing classes"):
        evaluator.process([{"image_id": 0}], [too_many])
    with pytest.raises(KeyError, match="parsing_classes"):
        pe.ParsingEvaluator("d2seg_synthetic_instance_val")
