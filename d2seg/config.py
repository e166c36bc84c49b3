"""d2seg's config keys. `add_d2seg_config(cfg)` adds every one of them, with its default."""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.config import CfgNode, get_cfg


def add_mask_scoring_config(cfg: CfgNode) -> None:
    """Mask Scoring R-CNN (Huang et al., CVPR 2019). Defaults follow the authors' reference
    implementation (zjhuang22/maskscoring_rcnn, maskrcnn_benchmark/config/defaults.py)."""
    cfg.MODEL.ROI_MASKIOU_HEAD = CfgNode()
    cfg.MODEL.ROI_MASKIOU_HEAD.NAME = "MaskIoUHead"  # entry of ROI_MASKIOU_HEAD_REGISTRY
    cfg.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 256  # channels of the 4 convs (paper sec. 3.3)
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 4  # 3x3 convs; the last one has stride 2
    cfg.MODEL.ROI_MASKIOU_HEAD.FC_DIM = 1024  # width of the hidden FC layers
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_FC = 2  # hidden FC layers before the per-class output
    cfg.MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT = 1.0  # weight of the MaskIoU L2 loss (paper: 1)
    # Detach the predicted mask (and pooled features) fed to the MaskIoU head, so its loss does
    # not train the mask branch or backbone. Off in the reference implementation.
    cfg.MODEL.ROI_MASKIOU_HEAD.DETACH_INPUT = False


def add_d2seg_config(cfg: CfgNode) -> CfgNode:
    """Add every d2seg key to a Detectron2 config (call before `merge_from_file`).

    Each head family contributes its own `add_<head>_config`; this combines them.
    """
    add_mask_scoring_config(cfg)
    return cfg


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """Detectron2 defaults + d2seg keys, then `config_file`, then `KEY VALUE` overrides; frozen.

    An unknown key raises a KeyError that names the key and where it came from.
    """
    cfg = get_cfg()
    add_d2seg_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except KeyError as error:
        raise KeyError(f"{config_file}: {error.args[0]}") from error
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as error:  # yacs asserts on unknown override keys
        raise KeyError(f"command-line overrides: {error.args[0]}") from error
    cfg.freeze()
    return cfg
