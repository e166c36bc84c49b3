"""Reference numbers of d2seg's configs: the one table behind the model zoo page
(``docs/model_zoo.md``), the results table of the README and the evaluation report.

Every leaf config under ``configs/`` has a row; a row's numbers are keyed as the flattened
evaluation results are (``task/metric``, as in ``metrics.json``) and carry their source.
Sources: Detectron2's model zoo and its Panoptic-DeepLab project for Mask R-CNN, Panoptic FPN
and Panoptic-DeepLab; the Mask Scoring R-CNN paper (Huang et al., CVPR 2019); MMSegmentation's
model zoo for the semantic heads; the Parsing R-CNN / RP R-CNN authors' models for human
parsing; runs on this project's CPU machine for the quickstart configs.

The docs hold the generated tables between marker comments; refresh them with

    python -m d2seg.evaluation.reference_results --update README.md docs/model_zoo.md

(``--markdown`` / ``--summary`` print the model zoo tables / the README table instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Sequence

NOT_REPRODUCED = "–"
"""The cell of a metric that a row has no reference number for."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """One config (path under ``configs/``), its reference numbers ({} when there are none)
    and where they come from, plus the text of its section's extra columns. A row whose model
    differs from what the config builds says why in `not_comparable`: its numbers are shown in
    parentheses and never set beside a run's results."""

    config: str
    numbers: dict[str, float]
    source: str = ""
    cells: tuple[str, ...] = ()
    not_comparable: str = ""


@dataclasses.dataclass(frozen=True)
class Section:
    """One model-zoo table: its title, metric columns ((result key, heading), ...), extra
    columns, rows, and whether its rows with numbers also go into the README's table."""

    title: str
    metrics: tuple[tuple[str, str], ...]
    extra_columns: tuple[str, ...]
    rows: tuple[Reference, ...]
    in_summary: bool = False


BOX_AP = ("bbox/AP", "box AP")
MASK_AP = ("segm/AP", "mask AP")
PQ = ("panoptic_seg/PQ", "PQ")
CITYSCAPES_MIOU = ("sem_seg/IoU", "mIoU (Cityscapes)")
MIOU = ("sem_seg/mIoU", "mIoU")
PARSING_METRICS = (
    ("bbox/AP", "det AP"),
    ("parsing/mIoU", "mIoU"),
    ("parsing/APp50", "AP^p_50"),
    ("parsing/APpvol", "AP^p_vol"),
    ("parsing/PCP50", "PCP_50"),
)

_DETECTRON2 = "Detectron2 model zoo, COCO val2017"
_PANOPTIC_DEEPLAB = "Detectron2 Panoptic-DeepLab project"
_MASK_SCORING = "Mask Scoring R-CNN paper, COCO val2017"
_PARSING = "Parsing R-CNN authors' model"
_PARSING_1X = (
    "Parsing R-CNN authors' model, cfgs/CIHP/e2e_parsing_rcnn_R-50-FPN_1x_ms.yaml at "
    "soeaver/Parsing-R-CNN 8c4d940 (figures of 4832b04)"
)
_AUTHORS_PROTOCOL = "the authors' protocol (`MATCHING: reference`, empty images left out)"
_DEFAULT_PROTOCOL = "d2seg's defaults (`MATCHING: unclaimed`, empty images counted)"
_MEASURED = "measured here, 2 CPU cores"
_UNVERIFIED = "not copied here unverified"


def _instance(box: float, mask: float) -> dict[str, float]:
    return {"bbox/AP": box, "segm/AP": mask}


def _parsing(det: float, miou: float, ap50: float, apvol: float, pcp: float) -> dict[str, float]:
    return dict(zip((key for key, _ in PARSING_METRICS), (det, miou, ap50, apvol, pcp)))


def _semantic(prefix: str, model: str, r50: float | None, r101: float | None) -> list[Reference]:
    """The R-50 and R-101 D8 Cityscapes configs of one head; None: no reference number."""
    rows = []
    for depth, miou in (("50", r50), ("101", r101)):
        numbers = {} if miou is None else {"sem_seg/IoU": miou}
        source = f"MMSegmentation, Cityscapes val, R-{depth} D8 512x1024 80k" if numbers else ""
        note = "" if numbers else _UNVERIFIED
        config = f"Cityscapes-SemanticSegmentation/{prefix}_R_{depth}_D8_512x1024_80k.yaml"
        rows.append(Reference(config, numbers, source, (model, note)))
    return rows


def _baseline_only(config: str, detectron2_baseline: str) -> Reference:
    """A Mask Scoring config without a published number: only Detectron2's baseline is shown."""
    return Reference(config, {}, cells=(NOT_REPRODUCED, detectron2_baseline))


SECTIONS: tuple[Section, ...] = (
    Section(
        "Mask R-CNN, Panoptic FPN, Panoptic-DeepLab (8 GPUs; not re-measured here)",
        (BOX_AP, MASK_AP, PQ, CITYSCAPES_MIOU),
        ("notes",),
        (
            Reference(
                "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
                _instance(38.6, 35.2),
                _DETECTRON2,
            ),
            Reference(
                "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
                _instance(41.0, 37.2),
                _DETECTRON2,
            ),
            Reference(
                "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
                _instance(42.9, 38.6),
                _DETECTRON2,
            ),
            Reference(
                "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
                {"panoptic_seg/PQ": 39.4},
                _DETECTRON2,
            ),
            Reference(
                "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
                {"panoptic_seg/PQ": 41.5},
                _DETECTRON2,
            ),
            Reference(
                "Cityscapes/mask_rcnn_R_50_FPN.yaml",
                {"segm/AP": 36.5},
                "Detectron2 model zoo, Cityscapes val",
                ("mask AP is Cityscapes AP",),
            ),
            Reference(
                "Cityscapes-PanopticSegmentation/"
                "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml",
                {"panoptic_seg/PQ": 60.3, "sem_seg/IoU": 78.2, "segm/AP": 33.2},
                _PANOPTIC_DEEPLAB + ", Cityscapes val",
                ("R52, dilated res5, single scale; mask AP is Cityscapes AP",),
            ),
            Reference(
                "Cityscapes-PanopticSegmentation/"
                "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024_dsconv.yaml",
                {},
                cells=("DSConv decoders; loads the project's DSConv weights",),
            ),
            Reference(
                "COCO-PanopticSegmentation/"
                "panoptic_deeplab_R_52_os16_mg124_poly_200k_bs64_crop_640_640_coco_dsconv.yaml",
                {"panoptic_seg/PQ": 35.5},
                _PANOPTIC_DEEPLAB + ", COCO val2017",
                ("R52, dilated res5, single scale",),
            ),
        ),
    ),
    Section(
        "Mask Scoring R-CNN (COCO val2017 mask AP; not re-measured here)",
        (("segm/AP", "Mask Scoring R-CNN, paper"),),
        ("Mask R-CNN, paper's code base", "Detectron2's Mask R-CNN, same schedule"),
        (
            Reference(
                "COCO-InstanceSegmentation/mask_scoring_rcnn_R_50_FPN_1x.yaml",
                {"segm/AP": 35.6},
                _MASK_SCORING,
                ("34.2", "box 38.6 / mask 35.2"),
            ),
            _baseline_only(
                "COCO-InstanceSegmentation/mask_scoring_rcnn_R_50_FPN_3x.yaml",
                "box 41.0 / mask 37.2",
            ),
            Reference(
                "COCO-InstanceSegmentation/mask_scoring_rcnn_R_101_FPN_1x.yaml",
                {"segm/AP": 37.4},
                _MASK_SCORING,
                ("36.1", "– (no R101-FPN 1x in the model zoo)"),
            ),
            _baseline_only(
                "COCO-InstanceSegmentation/mask_scoring_rcnn_R_101_FPN_3x.yaml",
                "box 42.9 / mask 38.6",
            ),
            _baseline_only(
                "COCO-InstanceSegmentation/mask_scoring_cascade_rcnn_R_50_FPN_1x.yaml",
                "box 42.1 / mask 36.4 (Cascade Mask R-CNN)",
            ),
            _baseline_only(
                "COCO-InstanceSegmentation/mask_scoring_cascade_rcnn_R_50_FPN_3x.yaml",
                "box 44.3 / mask 38.5 (Cascade Mask R-CNN)",
            ),
            _baseline_only(
                "COCO-PanopticSegmentation/panoptic_fpn_mask_scoring_R_50_3x.yaml",
                "PQ 41.5 (Panoptic FPN)",
            ),
            _baseline_only("Cityscapes/mask_scoring_rcnn_R_50_FPN.yaml", "Cityscapes AP 36.5"),
        ),
    ),
    Section(
        "Semantic segmentation (MMSegmentation's val mIoU; not trained here)",
        (CITYSCAPES_MIOU, ("sem_seg/mIoU", "mIoU (ADE20K)")),
        ("model (registry name)", "notes"),
        (
            *_semantic("fcn", "FCN (`FCNHead`)", 73.6, 75.1),
            *_semantic("pspnet", "PSPNet (`PSPHead`)", 78.6, 79.8),
            *_semantic("deeplabv3", "DeepLabV3 (`ASPPHead`)", 79.3, 80.2),
            *_semantic("deeplabv3plus", "DeepLabV3+ (`DepthwiseSeparableASPPHead`)", 80.1, 81.0),
            *_semantic("danet", "DANet (`DAHead`)", 79.3, 80.4),
            *_semantic("ccnet", "CCNet (`CCHead`)", 79.0, 78.9),
            *_semantic("ann", "ANN (`ANNHead`, AFNB on res4 + res5, APNB)", None, None),
            *_semantic(
                "psanet", "PSANet (`PSAHead`, collect + distribute in plain PyTorch)", None, None
            ),
            *_semantic("isanet", "ISANet (`ISAHead`)", None, None),
            *(
                Reference(
                    f"Cityscapes-SemanticSegmentation/upernet_R_{depth}_512x1024_80k.yaml",
                    {},
                    cells=(f"UPerNet (`UPerHead`), undilated R-{depth}", _UNVERIFIED),
                )
                for depth in ("50", "101")
            ),
            Reference(
                "Cityscapes-SemanticSegmentation/denseaspp_R_50_D8_512x1024_80k.yaml",
                {},
                cells=("DenseASPP (`DenseASPPHead`, rates 3/6/12/18/24)", "not in MMSegmentation"),
            ),
            Reference(
                "Cityscapes-SemanticSegmentation/deeplabv2_R_101_D8_512x1024_80k.yaml",
                {},
                cells=("DeepLab v2 (`ASPPV2Head`, ASPP-sum 6/12/18/24)", "not in MMSegmentation"),
            ),
            Reference(
                "Cityscapes-SemanticSegmentation/ocrnet_R_101_D8_512x1024_80k.yaml",
                {"sem_seg/IoU": 80.81},
                "MMSegmentation, Cityscapes val, R-101 D8 512x1024 80k, batch 16",
                ("OCRNet (`OCRHead`, regions from the auxiliary head)", "batch 16"),
            ),
            Reference(
                "Cityscapes-SemanticSegmentation/lraspp_M-V3-D8_512x1024_320k.yaml",
                {"sem_seg/IoU": 69.54},
                "MMSegmentation, Cityscapes val, 320k",
                ("LR-ASPP (`LRASPPHead`), timm `mobilenetv3_large_100` D8", ""),
            ),
            Reference(
                "Cityscapes-SemanticSegmentation/ocrnet_HRNetV2_W18_512x1024_80k.yaml",
                {"sem_seg/IoU": 78.57},
                "MMSegmentation, Cityscapes val, 80k",
                ("OCRNet (`OCRHead`), timm `hrnet_w18`", "FCN + OCR cascade"),
            ),
            Reference(
                "Cityscapes-SemanticSegmentation/ocrnet_HRNetV2_W48_512x1024_80k.yaml",
                {"sem_seg/IoU": 80.70},
                "MMSegmentation, Cityscapes val, 80k",
                ("OCRNet (`OCRHead`), timm `hrnet_w48`", "FCN + OCR cascade"),
            ),
            *(
                Reference(
                    f"ADE20K-SemanticSegmentation/{prefix}_R_50_D8_512x512_160k.yaml",
                    {},
                    cells=(model, "R-50 D8, 512 x 512, 160k"),
                )
                for prefix, model in (
                    ("pspnet", "PSPNet (`PSPHead`)"),
                    ("deeplabv3", "DeepLabV3 (`ASPPHead`)"),
                    ("deeplabv3plus", "DeepLabV3+ (`DepthwiseSeparableASPPHead`)"),
                )
            ),
            Reference(
                "ADE20K-SemanticSegmentation/upernet_Swin_T_512x512_160k.yaml",
                {"sem_seg/mIoU": 44.41},
                "MMSegmentation, ADE20K val, 160k, ImageNet-1K weights",
                ("UPerNet (`UPerHead`), timm `swin_tiny_patch4_window7_224`", "AdamW"),
            ),
        ),
    ),
    Section(
        "Human parsing (the authors' models, x100; not re-measured here)",
        PARSING_METRICS,
        ("evaluation", "notes"),
        (
            Reference(
                "CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml",
                _parsing(65.8, 52.8, 57.2, 51.2, 55.4),
                _PARSING_1X,
                (_AUTHORS_PROTOCOL,),
            ),
            Reference(
                "CIHP-Parsing/parsing_rcnn_R_50_FPN_3x.yaml",
                _parsing(68.7, 56.0, 64.1, 54.1, 60.7),
                _PARSING,
                (_AUTHORS_PROTOCOL,),
            ),
            Reference(
                "CIHP-Parsing/parsing_rcnn_R_50_FPN_3x_rescoring.yaml",
                _parsing(67.3, 58.2, 71.6, 58.3, 62.2),
                "RP R-CNN 3x authors' model",
                (_AUTHORS_PROTOCOL,),
                not_comparable=(
                    "RP R-CNN also fuses a semantic-segmentation branch into the part "
                    "probabilities, which d2seg lacks"
                ),
            ),
            Reference(
                "MHP-v2-Parsing/parsing_rcnn_R_50_FPN_1x.yaml",
                {},
                cells=(
                    _AUTHORS_PROTOCOL,
                    "the authors' config and README disagree on AP^p_vol (37.6 / 36.7)",
                ),
            ),
            Reference(
                "MHP-v2-Parsing/parsing_rcnn_R_50_FPN_3x.yaml",
                _parsing(69.0, 36.1, 27.4, 40.5, 38.3),
                _PARSING,
                (_AUTHORS_PROTOCOL,),
            ),
            Reference(
                "LIP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml",
                {},
                cells=(_DEFAULT_PROTOCOL, "the CIHP 1x recipe; the authors have no LIP config"),
            ),
        ),
    ),
    Section(
        "Quickstart, instance and panoptic (measured here: 2 CPU cores, `SEED: 0`)",
        (BOX_AP, MASK_AP, PQ),
        ("val split", "training"),
        (
            Reference(
                "quickstart/mask_rcnn_R_18_FPN_synthetic.yaml",
                _instance(70.2, 70.9),
                _MEASURED,
                ("synthetic instance (48 images)", "280 it at 0.80 s/it (`make quickstart`)"),
            ),
            Reference(
                "quickstart/mask_scoring_rcnn_R_18_FPN_synthetic.yaml",
                _instance(76.0, 76.3),
                _MEASURED,
                ("synthetic instance", "400 it at 224-288 px, 1.24 s/it; mask AP by `mask_scores`"),
            ),
            Reference("quickstart/panoptic_fpn_R_18_synthetic.yaml", {}),
            Reference(
                "quickstart/panoptic_fpn_mask_scoring_R_18_synthetic.yaml",
                {**_instance(74.7, 77.7), "panoptic_seg/PQ": 92.4},
                _MEASURED,
                (
                    "synthetic panoptic",
                    "400 it at 224-288 px, 2.49 s/it (one thread, shared machine); "
                    "mask AP by `mask_scores`",
                ),
            ),
            Reference(
                "quickstart/panoptic_deeplab_R_18_synthetic.yaml",
                {**_instance(70.6, 72.2), "panoptic_seg/PQ": 91.0},
                _MEASURED,
                ("synthetic panoptic", "600 it at 0.88 s/it"),
            ),
        ),
        in_summary=True,
    ),
    Section(
        "Quickstart, semantic (measured here: 2 CPU cores shared with other jobs, `SEED: 0`)",
        (MIOU,),
        ("IoU: circle / triangle / square / sky / grass / sand", "training"),
        (
            Reference(
                "quickstart/pspnet_R_18_synthetic.yaml",
                {"sem_seg/mIoU": 61.6},
                _MEASURED,
                ("85.9 / 0.0 / 0.0 / 96.8 / 90.1 / 97.0", "198 it at 4.47 s/it (loaded machine)"),
            ),
            Reference(
                "quickstart/deeplabv3plus_R_18_synthetic.yaml",
                {"sem_seg/mIoU": 59.3},
                _MEASURED,
                ("68.2 / 0.0 / 0.0 / 97.4 / 93.9 / 96.2", "198 it at 7.37 s/it (loaded machine)"),
            ),
        ),
        in_summary=True,
    ),
    Section(
        "Quickstart, human parsing (measured here: 2 CPU cores, `SEED: 0`)",
        PARSING_METRICS,
        ("evaluation", "training"),
        (
            Reference(
                "quickstart/parsing_rcnn_R_18_FPN_synthetic.yaml",
                _parsing(42.0, 45.8, 31.1, 35.9, 31.6),
                _MEASURED,
                (_DEFAULT_PROTOCOL, "400 it at batch 4; 0.72 s/it on an idle machine"),
            ),
        ),
        in_summary=True,
    ),
)

SUMMARY_METRICS = (
    BOX_AP,
    MASK_AP,
    PQ,
    ("sem_seg/mIoU", "mIoU"),
    ("parsing/mIoU", "part mIoU"),
)
"""The columns of the README's table (the quickstart rows)."""


def all_references() -> list[Reference]:
    """Every row of every section, in model-zoo order."""
    return [row for section in SECTIONS for row in section.rows]


def reference_for(config_file: str) -> tuple[str, str, dict[str, float]] | None:
    """(config name under ``configs/``, source, numbers) of `config_file` (any path that ends
    in a listed name), or None for a config without comparable reference numbers."""
    path = os.path.normpath(config_file).replace(os.sep, "/")
    for row in all_references():
        if (
            row.numbers
            and not row.not_comparable
            and (path == row.config or path.endswith("/" + row.config))
        ):
            return row.config, row.source, dict(row.numbers)
    return None


def _number(row: Reference, key: str) -> str:
    if key not in row.numbers:
        return ""
    return f"({row.numbers[key]})" if row.not_comparable else str(row.numbers[key])


def _source(row: Reference) -> str:
    source = row.source or NOT_REPRODUCED
    return f"{source}; not comparable: {row.not_comparable}" if row.not_comparable else source


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def section_markdown(section: Section) -> str:
    """One section as a titled markdown table: config, metrics, extra columns, source."""
    header = ["config", *(h for _, h in section.metrics), *section.extra_columns, "source"]
    body = [
        [
            f"`{row.config}`",
            *(_number(row, key) for key, _ in section.metrics),
            *row.cells,
            *[""] * (len(section.extra_columns) - len(row.cells)),
            _source(row),
        ]
        for row in section.rows
    ]
    return f"**{section.title}**\n\n" + _table(header, body)


def model_zoo_markdown() -> str:
    """Every section's table, as ``docs/model_zoo.md`` shows them."""
    return "\n\n".join(section_markdown(section) for section in SECTIONS)


def summary_markdown() -> str:
    """The README's table: the quickstart rows that have numbers, one metric column each."""
    rows = [row for s in SECTIONS if s.in_summary for row in s.rows if row.numbers]
    header = ["config (`configs/`)", *(h for _, h in SUMMARY_METRICS)]
    body = [[f"`{row.config}`", *(_number(row, key) for key, _ in SUMMARY_METRICS)] for row in rows]
    return _table(header, body)


GENERATED_BLOCKS = {
    "reference-results": model_zoo_markdown,
    "reference-results-summary": summary_markdown,
}
"""Marker name -> its generated text; a file holds it between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``."""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _block_pattern(name: str) -> re.Pattern:
    begin, end = map(re.escape, _markers(name))
    return re.compile(rf"{begin}\n(?:.*?\n)?{end}", re.DOTALL)


def generated_block_names(text: str) -> list[str]:
    """The names of :data:`GENERATED_BLOCKS` whose begin and end markers `text` holds."""
    return [name for name in GENERATED_BLOCKS if _block_pattern(name).search(text)]


def refresh_generated_blocks(text: str) -> str:
    """`text` with every generated block it holds replaced by its current text."""
    for name, render in GENERATED_BLOCKS.items():
        begin, end = _markers(name)
        text = _block_pattern(name).sub(
            lambda _, b=begin, r=render, e=end: f"{b}\n{r()}\n{e}", text
        )
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--markdown", action="store_true", help="print the model zoo tables")
    mode.add_argument("--summary", action="store_true", help="print the README's table")
    mode.add_argument("--update", nargs="+", metavar="FILE", help="rewrite the marked blocks")
    args = parser.parse_args(argv)
    if args.markdown:
        print(model_zoo_markdown())
    elif args.summary:
        print(summary_markdown())
    else:
        for path in args.update:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if not generated_block_names(text):
                parser.error(f"{path} holds no <!-- reference-results...:begin --> marker")
            with open(path, "w", encoding="utf-8") as f:
                f.write(refresh_generated_blocks(text))


if __name__ == "__main__":
    main()
