"""Shared tables of the semantic-head tests: the heads, MMSegmentation's layer-by-layer parameter
counts, and small head / model configs."""

from __future__ import annotations

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from d2seg.config import add_d2seg_config, load_config
from tests.helpers.scripts import REPO_ROOT

QUICKSTARTS = {
    "PSPHead": "configs/quickstart/pspnet_R_18_synthetic.yaml",
    "DepthwiseSeparableASPPHead": "configs/quickstart/deeplabv3plus_R_18_synthetic.yaml",
}
HEADS = [
    "FCNHead",
    "PSPHead",
    "ASPPHead",
    "DepthwiseSeparableASPPHead",
    "DAHead",
    "CCHead",
    "OCRHead",
    "ASPPV2Head",
    "UPerHead",
    "ISAHead",
    "ANNHead",
    "DenseASPPHead",
    "PSAHead",
]
EXTRA_LOSSES = {"DAHead": {"loss_sem_seg_pam", "loss_sem_seg_cam"}}


def head_cfg(name, in_channels=2048, num_classes=19):
    cfg = add_d2seg_config(get_cfg())
    sem = cfg.MODEL.SEM_SEG_HEAD
    sem.NAME, sem.NUM_CLASSES, sem.CONVS_DIM, sem.NORM = name, num_classes, 512, "BN"
    sem.IN_FEATURES, sem.AUX, sem.ASPP.DILATIONS = ["res5"], [{"IN_FEATURE": "res4"}], [12, 24, 36]
    if name == "UPerHead":  # every level, finest first
        sem.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    if name == "ANNHead":  # [low, high]
        sem.IN_FEATURES = ["res4", "res5"]
    shapes = {
        "res2": ShapeSpec(channels=in_channels // 8, stride=4),
        "res3": ShapeSpec(channels=in_channels // 4, stride=8),
        "res4": ShapeSpec(channels=in_channels // 2, stride=8),
        "res5": ShapeSpec(channels=in_channels, stride=8),
    }
    return cfg, shapes


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 2 * c


def sep(c_in, c_out):  # depthwise 3x3 + BN + pointwise 1x1 + BN
    return conv(3, 1, c_in) + bn(c_in) + conv(1, c_in, c_out) + bn(c_out)


# MMSegmentation R-50-D8 Cityscapes heads (in 2048, channels 512, 19 classes), written out
# layer by layer; every head also has the auxiliary FCN head on res4 and a 1x1 classifier.
CLS, AUX = conv(1, 512, 19, bias=True), conv(3, 1024, 256) + bn(256) + conv(1, 256, 19, True)
LAYER_PARAMS = {
    "FCNHead": [
        conv(3, 2048, 512) + bn(512),
        conv(3, 512, 512) + bn(512),
        conv(3, 2048 + 512, 512) + bn(512),
    ],
    "PSPHead": [conv(1, 2048, 512) + bn(512)] * 4 + [conv(3, 2048 + 4 * 512, 512) + bn(512)],
    # Detectron2's ASPP: 1x1, three 3x3 atrous, image pooling (1x1 conv with bias, no BN),
    # then MMSegmentation's 3x3 bottleneck over the 5 branches
    "ASPPHead": [conv(1, 2048, 512) + bn(512)]
    + [conv(3, 2048, 512) + bn(512)] * 3
    + [conv(1, 2048, 512, bias=True), conv(3, 5 * 512, 512) + bn(512)],
    "DepthwiseSeparableASPPHead": [conv(1, 2048, 512) + bn(512)]
    + [sep(2048, 512)] * 3
    + [
        conv(1, 2048, 512, bias=True),
        conv(3, 5 * 512, 512) + bn(512),
        conv(1, 256, 48) + bn(48),
        sep(512 + 48, 512),
        sep(512, 512),
    ],
    # two branches of 3x3 conv, attention, 3x3 conv, each with its own classifier; position
    # attention: 1x1 query / key to 64 and value to 512 (with biases) and gamma
    "DAHead": [conv(3, 2048, 512) + bn(512), conv(3, 512, 512) + bn(512)] * 2
    + [2 * conv(1, 512, 64, True) + conv(1, 512, 512, True) + 1, 1, 2 * CLS],
    # the FCN head's three convs plus criss-cross attention (query / key to 512 / 8, value, gamma)
    "CCHead": [
        conv(3, 2048, 512) + bn(512),
        conv(3, 512, 512) + bn(512),
        conv(3, 2048 + 512, 512) + bn(512),
        2 * conv(1, 512, 64, True) + conv(1, 512, 512, True) + 1,
    ],
    # DeepLab v2: four 3x3 atrous convs (rates 6 / 12 / 18 / 24) to the 19 classes, summed
    "ASPPV2Head": [conv(3, 2048, 19, bias=True)] * 4,
    # UPerNet: PPM (as PSPNet) on res5, 1x1 laterals of res2..res4 to 512, a 3x3 conv per FPN
    # level, 3x3 fusion of the 4 levels
    "UPerHead": [conv(1, 2048, 512) + bn(512)] * 4
    + [conv(3, 2048 + 4 * 512, 512) + bn(512)]
    + [conv(1, c, 512) + bn(512) for c in (256, 512, 1024)]
    + [conv(3, 512, 512) + bn(512)] * 3
    + [conv(3, 4 * 512, 512) + bn(512)],
    # ISANet: 3x3 in-conv; long- and short-range attention each with queries / keys two 1x1
    # conv-BN to 256, a 1x1 value conv (bias) and a 1x1 conv-BN output; 1x1 fusion
    "ISAHead": [conv(3, 2048, 512) + bn(512)]
    + [
        2 * (conv(1, 512, 256) + bn(256) + conv(1, 256, 256) + bn(256))
        + conv(1, 512, 512, True)
        + conv(1, 512, 512)
        + bn(512)
    ]
    * 2
    + [conv(1, 1024, 512) + bn(512)],
    # ANN: AFNB (query 1x1 conv-BN 2048 -> 256, key 1024 -> 256, value conv 1024 -> 256, out
    # conv 256 -> 2048, 1x1 conv-BN fusion 4096 -> 2048), 3x3 conv-BN to 512, APNB (one shared
    # query / key conv-BN, value and out convs, 1x1 conv-BN fusion 1024 -> 512)
    "ANNHead": [
        conv(1, 2048, 256) + bn(256) + conv(1, 1024, 256) + bn(256),
        conv(1, 1024, 256, True) + conv(1, 256, 2048, True),
        conv(1, 4096, 2048) + bn(2048),
        conv(3, 2048, 512) + bn(512),
        conv(1, 512, 256) + bn(256) + conv(1, 512, 256, True) + conv(1, 256, 512, True),
        conv(1, 1024, 512) + bn(512),
    ],
    # DenseASPP: per rate 3/6/12/18/24 [BN] 1x1 to 512, BN, 3x3 to 128 on the input and every
    # earlier output (no leading BN on the first); its classifier reads 2048 + 5 x 128 channels
    "DenseASPPHead": [
        (bn(2048 + 128 * i) if i else 0)
        + conv(1, 2048 + 128 * i, 512)
        + bn(512)
        + conv(3, 512, 128)
        for i in range(5)
    ]
    + [conv(1, 2048 + 5 * 128, 19, bias=True)],
    # PSANet: per branch (collect, distribute) 1x1 conv-BN reduce to 512, 1x1 conv-BN and a 1x1
    # conv (no bias) to the 97 x 97 mask; 1x1 conv-BN projection 1024 -> 2048, 3x3 conv-BN fusion
    "PSAHead": [conv(1, 2048, 512) + bn(512) + conv(1, 512, 512) + bn(512) + conv(1, 512, 97 * 97)]
    * 2
    + [conv(1, 1024, 2048) + bn(2048), conv(3, 4096, 512) + bn(512)],
    # 3x3 bottleneck; queries and keys two 1x1 conv-BN to 256, value one, out back to 512;
    # 1x1 fusion of [context, feature]; the region map is the auxiliary head's
    "OCRHead": [
        conv(3, 2048, 512) + bn(512),
        2 * (conv(1, 512, 256) + bn(256) + conv(1, 256, 256) + bn(256)),
        conv(1, 512, 256) + bn(256),
        conv(1, 256, 512) + bn(512),
        conv(1, 1024, 512) + bn(512),
    ],
}


def tiny_model_cfg(head="PSPHead", opts=()):
    return load_config(
        str(REPO_ROOT / QUICKSTARTS["PSPHead"]),
        [
            "MODEL.SEM_SEG_HEAD.NAME",
            head,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "16",
            "MODEL.SEM_SEG_HEAD.AUX",
            "[{'IN_FEATURE': 'res3', 'CHANNELS': 8}]",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "16",
            *opts,
        ],
    )


def flat(x):
    """(C, H, W) -> (H W, C): one row per position, raster order."""
    return x.flatten(1).T
