"""The reference-number table: one row per config that exists, and the docs show exactly the
tables generated from it."""

import pytest

from d2seg.evaluation.reference_results import (
    GENERATED_BLOCKS,
    all_references,
    generated_block_names,
    main,
    model_zoo_markdown,
    reference_for,
    refresh_generated_blocks,
)
from tests.helpers.configs import CONFIG_ROOT, MODEL_CONFIGS
from tests.helpers.scripts import REPO_ROOT

REFRESH = "python -m d2seg.evaluation.reference_results --update README.md docs/model_zoo.md"


@pytest.mark.parametrize(
    ("document", "block"),
    [("README.md", "reference-results-summary"), ("docs/model_zoo.md", "reference-results")],
)
def test_docs_show_the_generated_tables(document, block):
    text = (REPO_ROOT / document).read_text(encoding="utf-8")
    assert block in generated_block_names(text), f"{document} lacks <!-- {block}:begin/end -->"
    assert refresh_generated_blocks(text) == text, f"{document} is stale: run `{REFRESH}`"


def test_every_listed_config_exists():
    missing = [row.config for row in all_references() if not (CONFIG_ROOT / row.config).is_file()]
    assert not missing, f"reference_results.py names configs that are not under configs/: {missing}"


def test_every_config_is_listed_once():
    listed = [row.config for row in all_references()]
    assert len(listed) == len(set(listed))
    unlisted = sorted(set(MODEL_CONFIGS) - set(listed))
    assert not unlisted, f"configs without a row in reference_results.py: {unlisted}"


def test_reference_for():
    name = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    expected = (name, "Detectron2 model zoo, COCO val2017", {"bbox/AP": 38.6, "segm/AP": 35.2})
    assert reference_for(name) == expected
    assert reference_for(f"/somewhere/configs/{name}") == expected
    assert reference_for("configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml")[2] == {
        "bbox/AP": 70.2,
        "segm/AP": 70.9,
    }
    # a listed config without numbers, a name that only shares a suffix, an unknown one
    assert reference_for("configs/LIP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml") is None
    assert reference_for("other_mask_rcnn_R_50_FPN_1x.yaml") is None
    assert reference_for("") is None
    # the CIHP 1x row quotes the authors' current config and says which commit
    cihp_1x = reference_for("configs/CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml")
    assert cihp_1x[2]["parsing/mIoU"] == 52.8 and "8c4d940" in cihp_1x[1]
    # a row whose model differs from the config's is never set beside a run's results
    rescoring = "CIHP-Parsing/parsing_rcnn_R_50_FPN_3x_rescoring.yaml"
    row = next(r for r in all_references() if r.config == rescoring)
    assert row.numbers and row.not_comparable
    assert reference_for(rescoring) is None
    line = next(x for x in model_zoo_markdown().splitlines() if rescoring in x)
    assert "| (58.2) |" in line and "not comparable: " in line
    # callers get their own copy of the numbers
    reference_for(name)[2]["bbox/AP"] = 0.0
    assert reference_for(name) == expected


def test_update_rewrites_only_the_marked_blocks(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(
        "before\n<!-- reference-results-summary:begin -->\nold\n"
        "<!-- reference-results-summary:end -->\nafter\n",
        encoding="utf-8",
    )
    main(["--update", str(page)])
    summary = GENERATED_BLOCKS["reference-results-summary"]()
    assert page.read_text(encoding="utf-8") == (
        f"before\n<!-- reference-results-summary:begin -->\n{summary}\n"
        "<!-- reference-results-summary:end -->\nafter\n"
    )
    main(["--markdown"])
    assert capsys.readouterr().out == GENERATED_BLOCKS["reference-results"]() + "\n"
    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["--update", str(unmarked)])
    assert unmarked.read_text(encoding="utf-8") == "no markers\n"
