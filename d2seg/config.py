"""d2seg's config keys. `add_d2seg_config(cfg)` adds every one of them, with its default."""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.config import CfgNode, get_cfg


def add_mask_scoring_config(cfg: CfgNode) -> None:
    """Mask Scoring R-CNN (Huang et al., CVPR 2019). Defaults follow the authors' reference
    implementation (zjhuang22/maskscoring_rcnn, maskrcnn_benchmark/config/defaults.py). The
    model turns it on with MODEL.ROI_MASK_HEAD.NAME "MaskScoringConvUpsampleHead"."""
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
    # MaskScoringPanopticFPN orders instances by mask_scores in the panoptic merge; this names
    # the score PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH compares with (>=):
    # "mask_scores" or "scores"; "mask_scores" gave the higher PQ on the synthetic panoptic
    # split (README, Mask Scoring R-CNN section), though by 0.04 only.
    cfg.MODEL.ROI_MASKIOU_HEAD.PANOPTIC_THRESH_SCORE = "mask_scores"


def add_panoptic_deeplab_config(cfg: CfgNode) -> None:
    """Panoptic-DeepLab (Cheng et al., CVPR 2020). Defaults are the paper's Cityscapes setting,
    as in the authors' reference (bowenc0221/panoptic-deeplab) and Detectron2's Panoptic-DeepLab
    project; COCO configs override LOSS_TOP_K, STUFF_AREA and NMS_KERNEL. Key names are the
    project's, so its configs' values carry over."""
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
    ins.NAME = "D2SegPanopticDeepLabInsEmbedHead"  # entry of INS_EMBED_BRANCHES_REGISTRY
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
    # Meta-architecture and post-processing.
    pdl = cfg.MODEL.PANOPTIC_DEEPLAB = CfgNode()
    pdl.USE_DEPTHWISE_SEPARABLE_CONV = False  # 5x5 DSConv decoders (the paper's light head)
    # "authors": every prediction head is one 5x5 DSConv with the DSConv decoders, as in the
    # authors' reference; "detectron2": the centre head stays two 3x3 convs there, as in
    # Detectron2's project, so that its model-zoo checkpoints load. Same with 3x3 decoders.
    pdl.HEAD_LAYOUT = "authors"
    # ASPP image pooling: "global" pools the whole input, at test the whole test image (the
    # authors' evaluation: test crop = full 1025 x 2049 image); "train_crop" pools a window the
    # size of INPUT.CROP.SIZE, as Detectron2's project does (inputs must be multiples of it).
    pdl.ASPP_POOLING = "global"
    pdl.STUFF_AREA = 2048  # stuff segments smaller than this become VOID (COCO: 4096)
    pdl.CENTER_THRESHOLD = 0.1  # centre heatmap threshold (strict >)
    pdl.NMS_KERNEL = 7  # centre max-pool NMS window (COCO: 41)
    pdl.TOP_K_INSTANCE = 200  # centres kept
    pdl.PREDICT_INSTANCES = True  # also output `instances` for instance-AP evaluation
    pdl.SIZE_DIVISIBILITY = -1  # pad inputs to a multiple of this (-1: backbone's)
    pdl.GROUPING_CHUNK_SIZE = 4096  # thing pixels grouped at once (bounds memory, fits cache)
    # Target generation (the mapper's; Detectron2's project keeps them under INPUT too).
    cfg.INPUT.GAUSSIAN_SIGMA = 8.0  # centre heatmap Gaussian (paper sec. 3.2; project: 10)
    cfg.INPUT.SMALL_INSTANCE_AREA = 4096  # instances below 64 x 64 pixels (strict <) get ...
    cfg.INPUT.SMALL_INSTANCE_WEIGHT = 3  # ... this semantic loss weight (an integer there)
    cfg.INPUT.IGNORE_CROWD_IN_SEMANTIC = False  # crowd pixels keep their semantic label
    cfg.INPUT.IGNORE_STUFF_IN_OFFSET = True  # offsets are learnt on thing pixels only
    # Optimizer and schedule hooks selected by name (d2seg/solver.py).
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" (Detectron2's), "ADAM" (Panoptic-DeepLab), "ADAMW" (Swin)
    cfg.SOLVER.POLY_LR_POWER = 0.9  # for LR_SCHEDULER_NAME "WarmupPolyLR"
    cfg.SOLVER.POLY_LR_END = 0.0  # absolute LR the poly schedule ends at (MMSeg min_lr 1e-4)


def add_parsing_config(cfg: CfgNode) -> None:
    """Parsing R-CNN (Yang et al., CVPR 2019). Defaults are the authors' CIHP R-50-FPN configs
    (soeaver/Parsing-R-CNN, cfgs/CIHP/e2e_parsing_rcnn_R-50-FPN_*x_ms.yaml over
    rcnn/core/config.py); the ParsingIoU head is RP R-CNN's (Yang et al., 2020)."""
    cfg.MODEL.PARSING_ON = False  # add the parsing branch (ParsingROIHeads)
    head = cfg.MODEL.ROI_PARSING_HEAD = CfgNode()
    head.NAME = "ParsingGCEHead"  # entry of ROI_PARSING_HEAD_REGISTRY
    head.IN_FEATURES = ["p2"]  # every RoI pooled from P2 only (reference ROI_STRIDES [4])
    head.POOLER_RESOLUTION = 32  # RoIAlign output (reference ROI_XFORM_RESOLUTION)
    head.POOLER_SAMPLING_RATIO = 2  # reference ROI_XFORM_SAMPLING_RATIO
    head.POOLER_TYPE = "ROIAlignV2"  # as Detectron2's heads (reference: unaligned ROIAlign)
    head.NUM_PARSING = 20  # part classes incl. background (CIHP / LIP 20, MHP-v2 59)
    head.RESOLUTION = 128  # side of the predicted logits and targets (paper sec. 3.1)
    head.ASPP_DIM = 256  # width of each ASPP branch (reference ASPPV3_DIM)
    head.ASPP_DILATIONS = [6, 12, 18]  # dilations of the 3x3 ASPP branches
    head.CONV_DIM = 512  # width after the ASPP and of the convs after the non-local block
    head.NUM_CONVS = 4  # 3x3 convs after the non-local block (NUM_CONVS_AFTER_ASPPV3)
    head.USE_NONLOCAL = True  # non-local block after the ASPP (reference USE_NL)
    head.NONLOCAL_RATIO = 1.0  # non-local inner width / CONV_DIM (reference NL_RATIO)
    head.NORM = ""  # norm of the head's convs: "" (Parsing R-CNN) or "GN" (RP R-CNN)
    head.ROI_SIZE_PER_IMG = 16  # foreground RoIs per image sampled for the loss (-1: all)
    head.LOSS_WEIGHT = 2.0  # cross-entropy weight ("double loss weight" in the configs)
    head.IGNORE_VALUE = 255  # target id left out of the loss (reference PARSING_IGNORE_LABEL)
    cfg.MODEL.PARSINGIOU_ON = False  # RP R-CNN re-scoring: parsing_scores = sqrt(score x IoU)
    iou = cfg.MODEL.ROI_PARSINGIOU_HEAD = CfgNode()
    iou.NUM_CONV = 2  # 3x3 convs, the last with stride 2 (reference NUM_STACKED_CONVS)
    iou.CONV_DIM = 128  # their width
    iou.NUM_FC = 2  # hidden fully connected layers after global average pooling
    iou.FC_DIM = 256  # their width (reference MLP_DIM)
    iou.LOSS_WEIGHT = 1.0  # weight of the L2 loss on RoIs with a positive IoU target


def add_parsing_evaluation_config(cfg: CfgNode) -> None:
    """Human-parsing evaluation (evaluator_type "parsing"). Defaults are the reference's
    (soeaver/Parsing-R-CNN rcnn/core/config.py, PRCNN.*) for CIHP; MHP-v2 configs set
    SEMSEG_SCORE_THRESH 0.05, as the reference's comment says."""
    cfg.TEST.PARSING = CfgNode()
    # Detections painted into each image's global part map for mIoU score >= this.
    cfg.TEST.PARSING.SEMSEG_SCORE_THRESH = 0.3  # reference PRCNN.SEMSEG_SCORE_THRESH (CIHP)
    cfg.TEST.PARSING.AP_SCORE_THRESH = 0.001  # detections ranked for AP^p / PCP score >= this
    # Images without any detection count in mIoU as all background; False drops them, as the
    # reference does (it writes no prediction PNG for them).
    cfg.TEST.PARSING.COUNT_EMPTY_IMAGES = True
    # AP^p matching: "unclaimed" (best person not yet claimed; issue 8's definition) or
    # "reference" (best person even if claimed -> false positive; the authors' parsing_eval.py).
    cfg.TEST.PARSING.MATCHING = "unclaimed"


def add_sem_seg_config(cfg: CfgNode) -> None:
    """Semantic-segmentation decode heads on a dilated ResNet (issue 11). Defaults are
    MMSegmentation's (mmseg/models/decode_heads/decode_head.py `BaseDecodeHead`, the
    `configs/_base_/models/*_r50-d8.py` model files and `OHEMPixelSampler`). Head width is
    MODEL.SEM_SEG_HEAD.CONVS_DIM (MMSegmentation's `channels`, 512 in its R-50-D8 configs); the
    ASPP heads read Panoptic-DeepLab's ASPP_DILATIONS."""
    # ResNetV1c dilation (mmseg/models/backbones/resnet.py): D8 = RES4 2 + RES5 4.
    cfg.MODEL.RESNETS.RES4_DILATION = 1  # dilation of res4 (2 for output stride 8)
    cfg.MODEL.RESNETS.CONTRACT_DILATION = False  # first block of a dilated stage at rate / 2
    sem = cfg.MODEL.SEM_SEG_HEAD
    sem.DROPOUT = 0.1  # Dropout2d before the 1x1 classifier (BaseDecodeHead dropout_ratio)
    sem.ALIGN_CORNERS = False  # bilinear resizes of logits and pyramids (MMSeg configs: False)
    sem.AUX_IN_FEATURE = ""  # auxiliary FCN head on this feature ("res4" in MMSeg); "": none
    sem.AUX_CHANNELS = 256  # width of the auxiliary head's 3x3 conv (MMSeg auxiliary_head)
    sem.AUX_KERNEL_SIZE = 3  # kernel of that conv (MMSeg HRNet OCR / FCN cascade: 1)
    sem.AUX_LOSS_WEIGHT = 0.4  # weight of the auxiliary cross-entropy (MMSeg auxiliary_head)
    sem.OHEM = False  # online hard example mining of pixels (MMSeg OHEMPixelSampler)
    sem.OHEM_THRESH = 0.7  # keep pixels whose true-class prob < this (< 0: hardest by loss)
    sem.OHEM_MIN_KEPT = 100000  # keep at least this many pixels per image (MMSeg ohem configs)
    sem.CLASS_WEIGHTS = []  # cross-entropy weight per class ([]: all 1)
    sem.AVG_NON_IGNORE = False  # average the loss over labelled pixels only (MMSeg: all pixels)
    sem.FCN_NUM_CONVS = 2  # 3x3 convs of the FCN head (MMSeg FCNHead num_convs)
    sem.FCN_CONCAT_INPUT = True  # FCN head: concat input and conv output, then a 3x3 conv
    sem.PSP_POOL_SCALES = [1, 2, 3, 6]  # PSPNet pyramid bins (paper sec. 3.2)
    sem.DANET_PAM_CHANNELS = 64  # DANet position-attention query / key width (MMSeg DAHead)
    sem.CCNET_RECURRENCE = 2  # CCNet criss-cross attention passes (paper sec. 3.3, R = 2)
    sem.ASPP_V2_DILATIONS = [6, 12, 18, 24]  # DeepLab v2 ASPP-L rates (paper sec. 3.3)
    sem.ANN_PROJECT_CHANNELS = 256  # ANN key / query / value width (MMSeg ANNHead)
    sem.ANN_KEY_POOL_SCALES = [1, 3, 6, 8]  # ANN pyramid-pooled keys (paper sec. 3.2)
    sem.DENSE_ASPP_DILATIONS = [3, 6, 12, 18, 24]  # DenseASPP rates (paper sec. 3.2)
    sem.DENSE_ASPP_GROWTH = 128  # DenseASPP layer output width (authors' d_feature1)
    sem.PSA_MASK_SIZE = [97, 97]  # PSANet over-complete mask (h, w) (MMSeg, 512x1024 crops)
    sem.PSA_SHRINK_FACTOR = 2  # PSANet attends on the map shrunk by this (MMSeg)
    sem.ISA_CHANNELS = 256  # ISANet query / key width (MMSeg ISAHead isa_channels)
    sem.ISA_DOWN_FACTOR = [8, 8]  # ISANet block size (h, w) (MMSeg down_factor)
    sem.OCR_CHANNELS = 256  # OCRNet key / query width (paper sec. 3.3; OCR head 512 = CONVS_DIM)
    sem.C1_IN_FEATURE = "res2"  # DeepLabV3+ low-level feature (paper sec. 3.1)
    sem.C1_CHANNELS = 48  # its 1x1 projection width (paper sec. 4.1)
    sem.LRASPP_BRANCH_CHANNELS = [32, 64]  # LR-ASPP skip projections (MMSeg LRASPPHead)
    sem.LRASPP_POOL_KERNEL = [49, 49]  # LR-ASPP gate's average pool (h, w) (MMSeg LRASPPHead)
    sem.LRASPP_POOL_STRIDE = [16, 20]  # its stride (h, w) (MMSeg LRASPPHead)
    # Training mapper (d2seg/data/mappers/sem_seg.py): MMSegmentation's RandomResize scale
    # (w, h) and ratio range ((): Detectron2's MIN_SIZE_TRAIN resize), photometric distortion.
    cfg.INPUT.SEM_SEG_SCALE = ()  # Cityscapes (2048, 1024), ADE20K (2048, 512)
    cfg.INPUT.SEM_SEG_RATIO_RANGE = (0.5, 2.0)  # MMSeg RandomResize ratio_range
    cfg.INPUT.PHOTOMETRIC_DISTORTION = False  # brightness / contrast / saturation jitter
    # Largest fraction of the crop one class may cover (MMSeg cat_max_ratio 0.75; 1.0: off), the
    # name Detectron2's DeepLab project gives it.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Inference (D2SegSemanticSegmentor): whole image or sliding window, plus test-time
    # augmentation; MMSegmentation's `test_cfg` and its multi-scale flip pipeline.
    test = cfg.TEST.SEM_SEG = CfgNode()
    test.MODE = "whole"  # "whole" or "slide"
    test.CROP_SIZE = [769, 769]  # sliding window (h, w) (MMSeg 769x769 Cityscapes configs)
    test.STRIDE = [513, 513]  # sliding-window step (h, w)
    test.SCALES = [1.0]  # image rescaling ratios averaged (MMSeg TTA: 0.5 ... 1.75)
    test.FLIP = False  # also average the horizontally flipped image


def add_timm_backbone_config(cfg: CfgNode) -> None:
    """timm backbones (d2seg/modeling/backbone/timm_backbone.py, BACKBONE.NAME
    "build_timm_backbone"). Defaults are timm's own; configs set MMSegmentation's values."""
    t = cfg.MODEL.TIMM = CfgNode()
    t.NAME = ""  # timm model name, e.g. "mobilenetv3_large_100" (built with pretrained=False)
    t.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # res5 = the deepest level, res4 the next
    t.OUTPUT_STRIDE = 32  # 8 / 16 dilate the last stages (models with timm output_stride only)
    t.DROP_PATH_RATE = -1.0  # stochastic depth (< 0: timm's default; MMSeg Swin-T: 0.3)
    t.OUTPUT_NORM = False  # LayerNorm on every output (MMSeg SwinTransformer's norm{i})
    t.CONCAT_FEATURE = ""  # extra output: OUT_FEATURES resized + concatenated (HRNetV2); "": none
    t.NORM = "BN"  # "BN" (timm's BatchNorm) or "SyncBN" (converted)


def add_evaluation_config(cfg: CfgNode) -> None:
    """Evaluation engines (d2seg/evaluation/coco_backend.py, panoptic_evaluation.py)."""
    # COCO box / mask AP: "auto" (hotcoco where installed, else Detectron2's COCO API), "hotcoco"
    # (error if missing) or "pycocotools" (Detectron2's path, its COCOeval_opt where built)
    cfg.TEST.EVAL_BACKEND = "auto"
    # PQ is computed from the maps in memory; True also writes predictions.json + predictions/
    # *.png (a COCO / Cityscapes panoptic submission) beside the results, ~10 ms per image
    cfg.TEST.PANOPTIC_WRITE_PREDICTIONS = False


def add_report_config(cfg: CfgNode) -> None:
    """The HTML evaluation report (d2seg/evaluation/report.py) written beside every evaluation's
    results as ``report.html``."""
    cfg.TEST.REPORT = CfgNode()
    cfg.TEST.REPORT.ENABLED = True  # write OUTPUT_DIR/inference/<dataset>/report.html
    cfg.TEST.REPORT.GALLERY = True  # best / worst images by per-image score (off: not scored)
    cfg.TEST.REPORT.GALLERY_SIZE = 8  # at most this many best and this many worst images
    # config file whose README reference numbers the report shows; load_config fills it in
    cfg.TEST.REPORT.CONFIG_FILE = ""


def add_d2seg_config(cfg: CfgNode) -> CfgNode:
    """Add every d2seg key to a Detectron2 config (call before `merge_from_file`).

    Each head family contributes its own `add_<head>_config`; this combines them.
    """
    add_mask_scoring_config(cfg)
    add_panoptic_deeplab_config(cfg)
    add_parsing_config(cfg)
    add_parsing_evaluation_config(cfg)
    add_sem_seg_config(cfg)
    add_timm_backbone_config(cfg)
    add_evaluation_config(cfg)
    add_report_config(cfg)
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
    except ValueError as error:  # yacs: a value of the wrong type (names key and value)
        raise ValueError(f"{config_file}: {error}") from error
    except FileNotFoundError as error:  # fvcore checks the file itself, not its _BASE_
        raise FileNotFoundError(f"{config_file}: _BASE_ {error.filename!r} not found") from error
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as error:  # yacs asserts on unknown override keys
        raise KeyError(f"command-line overrides: {error.args[0]}") from error
    cfg.TEST.REPORT.CONFIG_FILE = cfg.TEST.REPORT.CONFIG_FILE or str(config_file)
    cfg.freeze()
    return cfg
