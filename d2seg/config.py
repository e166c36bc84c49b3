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


def add_panoptic_deeplab_config(cfg: CfgNode) -> None:
    """Panoptic-DeepLab (Cheng et al., CVPR 2020). Defaults are the paper's Cityscapes setting,
    as in the authors' reference and Detectron2's Panoptic-DeepLab project configs; COCO
    configs override LOSS_TOP_K, STUFF_AREA and NMS_KERNEL."""
    # DeepLab ResNet variant (paper sec. 4: "R52" = 3-conv stem, res5 dilated, multi-grid).
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"  # "deeplab": three 3x3 convs (the last to 128 ch)
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]  # dilation multipliers of res5's 3 blocks
    # DeepLabV3+ semantic decoder, under Detectron2's semantic-head namespace.
    sem = cfg.MODEL.SEM_SEG_HEAD
    sem.PROJECT_FEATURES = ["res2", "res3"]  # low-level features fused by the decoder
    sem.PROJECT_CHANNELS = [32, 64]  # their 1x1 projections (res2 -> 32, res3 -> 64)
    sem.ASPP_CHANNELS = 256  # ASPP width
    sem.ASPP_DILATIONS = [6, 12, 18]  # ASPP atrous rates at output stride 16
    sem.ASPP_DROPOUT = 0.1  # dropout after ASPP
    sem.HEAD_CHANNELS = 256  # channels of the prediction head conv
    sem.LOSS_TYPE = "hard_pixel_mining"  # "cross_entropy" or "hard_pixel_mining"
    sem.LOSS_TOP_K = 0.2  # fraction of hardest pixels kept (0.2 Cityscapes, 1.0 COCO)
    # Instance (center / offset) decoder.
    ins = cfg.MODEL.INS_EMBED_HEAD = CfgNode()
    ins.NAME = "PanopticDeepLabInsEmbedHead"  # entry of INS_EMBED_BRANCHES_REGISTRY
    ins.IN_FEATURES = ["res2", "res3", "res5"]  # fused low-level features + ASPP input
    ins.PROJECT_FEATURES = ["res2", "res3"]
    ins.PROJECT_CHANNELS = [16, 32]  # instance decoder projections (paper: half the semantic)
    ins.ASPP_CHANNELS = 256
    ins.ASPP_DILATIONS = [6, 12, 18]
    ins.ASPP_DROPOUT = 0.1
    ins.HEAD_CHANNELS = 32  # channels of the center / offset prediction convs
    ins.CONVS_DIM = 128  # decoder width (paper: 128 for the instance branch)
    ins.COMMON_STRIDE = 4  # predictions at stride 4, upsampled x4
    ins.NORM = "SyncBN"
    ins.CENTER_LOSS_WEIGHT = 200.0  # paper sec. 3.4
    ins.OFFSET_LOSS_WEIGHT = 0.01  # paper sec. 3.4
    # Meta-architecture, targets and post-processing.
    pdl = cfg.MODEL.PANOPTIC_DEEPLAB = CfgNode()
    pdl.USE_DEPTHWISE_SEPARABLE_CONV = False  # 5x5 DSConv decoders (the paper's light head)
    pdl.STUFF_AREA = 2048  # stuff segments smaller than this become VOID (COCO: 4096)
    pdl.CENTER_THRESHOLD = 0.1  # centre heatmap threshold
    pdl.NMS_KERNEL = 7  # centre max-pool NMS window (COCO: 41)
    pdl.TOP_K_INSTANCE = 200  # centres kept
    pdl.PREDICT_INSTANCES = True  # also output `instances` for instance-AP evaluation
    pdl.SIZE_DIVISIBILITY = -1  # pad inputs to a multiple of this (-1: backbone's)
    pdl.GROUPING_CHUNK_SIZE = 4096  # thing pixels grouped at once (bounds memory, fits cache)
    pdl.GAUSSIAN_SIGMA = 8.0  # centre heatmap Gaussian (paper sec. 3.2)
    pdl.SMALL_INSTANCE_AREA = 4096  # instances below 64 x 64 pixels get ...
    pdl.SMALL_INSTANCE_WEIGHT = 3.0  # ... this semantic loss weight
    pdl.IGNORE_CROWD_IN_SEMANTIC = False  # crowd pixels keep their semantic label
    pdl.IGNORE_STUFF_IN_OFFSET = True  # offsets are learnt on thing pixels only
    # Optimizer and schedule hooks selected by name (d2seg/solver.py).
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" (Detectron2's) or "ADAM" (Panoptic-DeepLab: Adam)
    cfg.SOLVER.POLY_LR_POWER = 0.9  # for LR_SCHEDULER_NAME "WarmupPolyLR"
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0  # poly schedule floor, as a fraction of BASE_LR


def add_d2seg_config(cfg: CfgNode) -> CfgNode:
    """Add every d2seg key to a Detectron2 config (call before `merge_from_file`).

    Each head family contributes its own `add_<head>_config`; this combines them.
    """
    add_mask_scoring_config(cfg)
    add_panoptic_deeplab_config(cfg)
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
