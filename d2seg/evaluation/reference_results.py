"""The README's reference numbers per config (path under ``configs/``), keyed as the flattened
evaluation results are (``task/metric``, as in ``metrics.json``), for the evaluation report.

Sources, as the README names them: Detectron2's model zoo (COCO val2017) and its
Panoptic-DeepLab project (Cityscapes val) for the Mask R-CNN, Panoptic FPN and Panoptic-DeepLab
configs; the Mask Scoring R-CNN paper (Huang et al., CVPR 2019) for its 1x configs;
MMSegmentation's Cityscapes val mIoU for the semantic heads; the Parsing R-CNN / RP R-CNN
authors' models for the CIHP / MHP-v2 configs; and the runs measured on this CPU for the
quickstart configs (README "Results" and "Parsing R-CNN" sections).
"""

from __future__ import annotations

import os

_DETECTRON2 = "Detectron2 model zoo, COCO val2017"
_CITYSCAPES = "Detectron2 Panoptic-DeepLab project, Cityscapes val"
_MMSEG = "MMSegmentation, Cityscapes val, R-50 / R-101 D8 512x1024 80k"
_PARSING = "Parsing R-CNN authors' model"
_MEASURED = "measured here on CPU (README)"


def _instance(box: float, mask: float) -> dict[str, float]:
    return {"bbox/AP": box, "segm/AP": mask}


def _parsing(det: float, miou: float, ap50: float, apvol: float, pcp: float) -> dict:
    return {
        "bbox/AP": det,
        "parsing/mIoU": miou,
        "parsing/APp50": ap50,
        "parsing/APpvol": apvol,
        "parsing/PCP50": pcp,
    }


def _semantic(head: str, r50: float, r101: float) -> dict[str, tuple[str, dict[str, float]]]:
    return {
        f"Cityscapes-SemanticSegmentation/{head}_R_{depth}_D8_512x1024_80k.yaml": (
            _MMSEG,
            {"sem_seg/IoU": miou},
        )
        for depth, miou in (("50", r50), ("101", r101))
    }


REFERENCE_RESULTS: dict[str, tuple[str, dict[str, float]]] = {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": (_DETECTRON2, _instance(38.6, 35.2)),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml": (_DETECTRON2, _instance(41.0, 37.2)),
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml": (_DETECTRON2, _instance(42.9, 38.6)),
    "COCO-InstanceSegmentation/mask_scoring_rcnn_R_50_FPN_1x.yaml": (
        "Mask Scoring R-CNN paper, COCO val2017",
        {"segm/AP": 35.6},
    ),
    "COCO-InstanceSegmentation/mask_scoring_rcnn_R_101_FPN_1x.yaml": (
        "Mask Scoring R-CNN paper, COCO val2017",
        {"segm/AP": 37.4},
    ),
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml": (_DETECTRON2, {"panoptic_seg/PQ": 39.4}),
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml": (_DETECTRON2, {"panoptic_seg/PQ": 41.5}),
    "Cityscapes/mask_rcnn_R_50_FPN.yaml": (_DETECTRON2 + " (Cityscapes val)", {"segm/AP": 36.5}),
    "Cityscapes-PanopticSegmentation/"
    "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml": (
        _CITYSCAPES,
        {"panoptic_seg/PQ": 60.3, "sem_seg/IoU": 78.2, "segm/AP": 33.2},
    ),
    "COCO-PanopticSegmentation/"
    "panoptic_deeplab_R_52_os16_mg124_poly_200k_bs64_crop_640_640_coco_dsconv.yaml": (
        "Detectron2 Panoptic-DeepLab project, COCO val2017",
        {"panoptic_seg/PQ": 35.5},
    ),
    **_semantic("fcn", 73.6, 75.1),
    **_semantic("pspnet", 78.6, 79.8),
    **_semantic("deeplabv3", 79.3, 80.2),
    **_semantic("deeplabv3plus", 80.1, 81.0),
    **_semantic("danet", 79.3, 80.4),
    **_semantic("ccnet", 79.0, 78.9),
    "CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml": (
        _PARSING,
        _parsing(66.0, 52.65, 57.6, 51.4, 55.9),
    ),
    "CIHP-Parsing/parsing_rcnn_R_50_FPN_3x.yaml": (
        _PARSING,
        _parsing(68.7, 56.0, 64.1, 54.1, 60.7),
    ),
    "CIHP-Parsing/parsing_rcnn_R_50_FPN_3x_rescoring.yaml": (
        "RP R-CNN 3x authors' model",
        _parsing(67.3, 58.2, 71.6, 58.3, 62.2),
    ),
    "MHP-v2-Parsing/parsing_rcnn_R_50_FPN_3x.yaml": (
        _PARSING,
        _parsing(69.0, 36.1, 27.4, 40.5, 38.3),
    ),
    "quickstart/mask_rcnn_R_18_FPN_synthetic.yaml": (_MEASURED, _instance(70.2, 70.9)),
    "quickstart/mask_scoring_rcnn_R_18_FPN_synthetic.yaml": (_MEASURED, _instance(76.0, 76.3)),
    "quickstart/panoptic_fpn_mask_scoring_R_18_synthetic.yaml": (
        _MEASURED,
        {**_instance(74.7, 77.7), "panoptic_seg/PQ": 92.4},
    ),
    "quickstart/panoptic_deeplab_R_18_synthetic.yaml": (
        _MEASURED,
        {**_instance(70.6, 72.2), "panoptic_seg/PQ": 91.0},
    ),
    "quickstart/pspnet_R_18_synthetic.yaml": (_MEASURED, {"sem_seg/mIoU": 61.6}),
    "quickstart/deeplabv3plus_R_18_synthetic.yaml": (_MEASURED, {"sem_seg/mIoU": 59.3}),
    "quickstart/parsing_rcnn_R_18_FPN_synthetic.yaml": (
        _MEASURED,
        _parsing(42.0, 45.8, 31.1, 35.9, 31.6),
    ),
}


def reference_for(config_file: str) -> tuple[str, str, dict[str, float]] | None:
    """(config name under ``configs/``, source, numbers) of `config_file` (any path that ends
    in a listed name), or None for a config the README gives no numbers for."""
    path = os.path.normpath(config_file).replace(os.sep, "/")
    for name, (source, numbers) in REFERENCE_RESULTS.items():
        if path == name or path.endswith("/" + name):
            return name, source, numbers
    return None
