"""Config paths and the overrides that shrink each config family to a CPU-sized model."""

from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))
MODEL_CONFIGS = [c for c in CONFIGS if not Path(c).name.startswith("Base-")]
CPU = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
# shrinks any R-CNN config to an R-18 that trains in seconds on CPU
TINY_RCNN = CPU + [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.BACKBONE.FREEZE_AT",
    "0",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "64",
    "INPUT.MIN_SIZE_TRAIN",
    "(160,)",
    "INPUT.MAX_SIZE_TRAIN",
    "256",
    "INPUT.RANDOM_FLIP",
    "none",
    "INPUT.MASK_FORMAT",
    "bitmask",  # the synthetic json mixes polygons and RLE
    "MODEL.ROI_MASKIOU_HEAD.CONV_DIM",
    "16",
    "MODEL.ROI_MASKIOU_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_PARSING_HEAD.ASPP_DIM",
    "32",
    "MODEL.ROI_PARSING_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_PARSING_HEAD.POOLER_RESOLUTION",
    "16",
    "MODEL.ROI_PARSING_HEAD.RESOLUTION",
    "32",
    "MODEL.ROI_PARSINGIOU_HEAD.CONV_DIM",
    "16",
    "MODEL.ROI_PARSINGIOU_HEAD.FC_DIM",
    "32",
]

# shrinks a Panoptic-DeepLab config the same way (no dilation, no crop); each config keeps its
# own norm, so the paper configs' SyncBN trains here in one CPU process
TINY_PANOPTIC_DEEPLAB = CPU + [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "32",
    "MODEL.RESNETS.RES5_DILATION",
    "1",
    "MODEL.RESNETS.RES5_MULTI_GRID",
    "[1, 1]",
    "MODEL.SEM_SEG_HEAD.PANOPTIC_DEEPLAB.ASPP_CHANNELS",
    "32",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "MODEL.SEM_SEG_HEAD.PANOPTIC_DEEPLAB.HEAD_CHANNELS",
    "32",
    "MODEL.INS_EMBED_HEAD.ASPP_CHANNELS",
    "32",
    "MODEL.INS_EMBED_HEAD.CONVS_DIM",
    "16",
    "MODEL.INS_EMBED_HEAD.HEAD_CHANNELS",
    "16",
    "MODEL.PANOPTIC_DEEPLAB.SIZE_DIVISIBILITY",
    "32",
    "INPUT.CROP.ENABLED",
    "False",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "DATASETS.TRAIN",
    "('d2seg_synthetic_panoptic_train',)",
]
# shrinks a semantic-segmentation config to an undilated R-18 with narrow heads (and, through
# tiny_sem_seg_overrides, narrow auxiliary heads)
TINY_SEM_SEG = CPU + [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "32",
    "MODEL.RESNETS.RES4_DILATION",
    "1",
    "MODEL.RESNETS.RES5_DILATION",
    "1",
    "MODEL.RESNETS.RES5_MULTI_GRID",
    "[1, 1]",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "16",
    "INPUT.SEM_SEG_SCALE",
    "()",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "INPUT.CROP.SIZE",
    "(96, 96)",
    "DATASETS.TRAIN",
    "('d2seg_synthetic_sem_seg_train',)",
]
# timm backbones keep their size under TINY_SEM_SEG; these configs swap in their family's
# smallest model (the heads read the channels from the backbone)
TINY_TIMM = {
    f"Cityscapes-SemanticSegmentation/ocrnet_HRNetV2_W{width}_512x1024_80k.yaml": [
        "MODEL.TIMM.NAME",
        "hrnet_w18_small_v2",
    ]
    for width in (18, 48)
}


TINY_AUX_CHANNELS = 8  # width of every auxiliary head of a tiny semantic config


def tiny_sem_seg_overrides(config_name: str) -> list[str]:
    """TINY_SEM_SEG (+ TINY_TIMM) for `config_name`, with each of its auxiliary heads narrowed
    to TINY_AUX_CHANNELS (the AUX list is replaced whole, so it is read from the config)."""
    from d2seg.config import load_config

    overrides = TINY_SEM_SEG + TINY_TIMM.get(config_name, [])
    aux = load_config(str(CONFIG_ROOT / config_name), overrides).MODEL.SEM_SEG_HEAD.AUX
    narrow = [dict(entry) | {"CHANNELS": TINY_AUX_CHANNELS} for entry in aux]
    return overrides + ["MODEL.SEM_SEG_HEAD.AUX", repr(narrow)]


def tiny_overrides(config_name: str) -> list[str]:
    """The overrides that shrink `config_name` to its family's CPU-sized model."""
    from d2seg.config import load_config

    meta_arch = load_config(str(CONFIG_ROOT / config_name), CPU).MODEL.META_ARCHITECTURE
    if meta_arch == "D2SegSemanticSegmentor":
        return tiny_sem_seg_overrides(config_name)
    if meta_arch == "D2SegPanopticDeepLab":
        return TINY_PANOPTIC_DEEPLAB
    return TINY_RCNN


def training_split(cfg) -> str:
    """Synthetic data in the form the config's model trains on."""
    if cfg.MODEL.META_ARCHITECTURE == "D2SegPanopticDeepLab":
        return "d2seg_synthetic_panoptic_train"
    if cfg.MODEL.META_ARCHITECTURE == "D2SegSemanticSegmentor":
        return "d2seg_synthetic_sem_seg_train"
    if "PanopticFPN" in cfg.MODEL.META_ARCHITECTURE:
        return "d2seg_synthetic_panoptic_train_separated"
    if cfg.MODEL.ROI_HEADS.NAME == "ParsingROIHeads":
        return "d2seg_synthetic_parsing_train"
    return "d2seg_synthetic_instance_train"


def fixed_batch(cfg, dataset_name: str, size: int = 2) -> list[dict]:
    """The first `size` annotated records of `dataset_name`, through the config's train mapper."""
    from detectron2.data import DatasetCatalog

    from d2seg.data import build_train_mapper

    mapper = build_train_mapper(cfg)
    records = [
        r
        for r in DatasetCatalog.get(dataset_name)
        if r.get("annotations") or r.get("segments_info") or r.get("sem_seg_file_name")
    ][:size]
    return [mapper(r) for r in records]


def resumable_schedule(max_iter: int, checkpoint_period: int, warmup_iters: int) -> list[str]:
    """Overrides for a short deterministic run (seed 0, data in the main process, batch 2,
    no evaluation) that checkpoints every `checkpoint_period` iterations."""
    return [
        "SEED",
        "0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        str(checkpoint_period),
        "SOLVER.WARMUP_ITERS",
        str(warmup_iters),
        "DATASETS.TEST",
        "()",
    ]
