"""d2seg's Panoptic-DeepLab against Detectron2's installed project, side by side.

The project's model is built with random weights, saved as a checkpoint and loaded into d2seg
through MODEL.WEIGHTS, as a user with Detectron2 model-zoo weights would; the raw outputs must be
equal. Where d2seg deliberately differs (the authors' DSConv centre head, global ASPP pooling at
test, exact top-k), the tests show the difference.
"""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

project = pytest.importorskip("detectron2.projects.panoptic_deeplab")
from detectron2.projects.panoptic_deeplab.post_processing import (  # noqa: E402
    get_panoptic_segmentation,
)

from d2seg.config import add_d2seg_config  # noqa: E402
from d2seg.modeling.panoptic_deeplab.postprocessing import (  # noqa: E402
    find_instance_centers,
    panoptic_deeplab_inference,
)
from tests.helpers.configs import CONFIG_ROOT  # noqa: E402

CROP = (64, 128)
# the same keys in both code bases: a slim R-52 (DeepLab stem, res5 dilated with multi-grid)
SHARED = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "INPUT.FORMAT",
    "RGB",
    "MODEL.PIXEL_MEAN",
    "[123.675, 116.28, 103.53]",
    "MODEL.PIXEL_STD",
    "[58.395, 57.12, 57.375]",
    "MODEL.RESNETS.DEPTH",
    "50",
    "MODEL.RESNETS.STEM_TYPE",
    "deeplab",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "32",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "16",
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "False",
    "MODEL.RESNETS.RES5_DILATION",
    "2",
    "MODEL.RESNETS.RES5_MULTI_GRID",
    "[1, 2, 4]",
    "MODEL.RESNETS.OUT_FEATURES",
    "['res2', 'res3', 'res5']",
    "MODEL.BACKBONE.FREEZE_AT",
    "0",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES",
    "['res2', 'res3', 'res5']",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "6",
    "MODEL.SEM_SEG_HEAD.NORM",
    "BN",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
    "255",
    "MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS",
    "[4, 8]",
    "MODEL.INS_EMBED_HEAD.ASPP_CHANNELS",
    "32",
    "MODEL.INS_EMBED_HEAD.CONVS_DIM",
    "16",
    "MODEL.INS_EMBED_HEAD.HEAD_CHANNELS",
    "8",
    "MODEL.INS_EMBED_HEAD.NORM",
    "BN",
    "MODEL.INS_EMBED_HEAD.ASPP_DROPOUT",
    "0.0",
    "INPUT.CROP.ENABLED",
    "True",
    "INPUT.CROP.TYPE",
    "absolute",
    "INPUT.CROP.SIZE",
    str(CROP),
    "DATASETS.TRAIN",
    "('d2seg_synthetic_panoptic_train',)",
]

# the semantic branch's own keys: flat in the project, under SEM_SEG_HEAD.PANOPTIC_DEEPLAB in d2seg
SEMANTIC_BRANCH = {
    "PROJECT_CHANNELS": "[8, 16]",
    "ASPP_CHANNELS": "32",
    "HEAD_CHANNELS": "24",
    "LOSS_TOP_K": "0.2",
    "LOSS_TYPE": "hard_pixel_mining",
    "ASPP_DROPOUT": "0.0",
}


def semantic_branch(node: str) -> list[str]:
    return [item for k, v in SEMANTIC_BRANCH.items() for item in (f"{node}.{k}", v)]


def project_cfg(separable: bool):
    cfg = get_cfg()
    project.add_panoptic_deeplab_config(cfg)
    cfg.merge_from_list(
        SHARED
        + semantic_branch("MODEL.SEM_SEG_HEAD")
        + [
            "MODEL.META_ARCHITECTURE",
            "PanopticDeepLab",
            "MODEL.BACKBONE.NAME",
            "build_resnet_deeplab_backbone",
            "MODEL.SEM_SEG_HEAD.NAME",
            "PanopticDeepLabSemSegHead",
            "MODEL.INS_EMBED_HEAD.NAME",
            "PanopticDeepLabInsEmbedHead",
            "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV",
            str(separable),
            "MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV",
            str(separable),
        ]
    )
    return cfg


def d2seg_cfg(separable: bool, layout: str, pooling: str, weights: str = ""):
    cfg = get_cfg()
    add_d2seg_config(cfg)
    cfg.merge_from_file(str(CONFIG_ROOT / "Base-PanopticDeepLab.yaml"))
    cfg.merge_from_list(
        SHARED
        + semantic_branch("MODEL.SEM_SEG_HEAD.PANOPTIC_DEEPLAB")
        + [
            "MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV",
            str(separable),
            "MODEL.PANOPTIC_DEEPLAB.HEAD_LAYOUT",
            layout,
            "MODEL.PANOPTIC_DEEPLAB.ASPP_POOLING",
            pooling,
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    return cfg


def raw_outputs(model, images: torch.Tensor):
    """Semantic logits, centre heatmap and offsets of a model in eval mode."""
    model.eval()
    with torch.no_grad():
        features = model.backbone((images - model.pixel_mean) / model.pixel_std)
        logits, _ = model.sem_seg_head(features)
        center, offset, _, _ = model.ins_embed_head(features)
    return logits, center, offset


def project_checkpoint(tmp_path, separable: bool):
    """A project model with random weights (and BN statistics), saved as a checkpoint."""
    torch.manual_seed(0)
    model = build_model(project_cfg(separable))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"project_{separable}.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, str(path)


def load_d2seg(cfg):
    model = build_model(cfg)
    DetectionCheckpointer(model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return model


@pytest.mark.parametrize("separable,layout", [(False, "authors"), (True, "detectron2")])
def test_project_checkpoints_load_and_give_the_same_outputs(
    tmp_path, separable, layout, synthetic_root
):
    reference, weights = project_checkpoint(tmp_path, separable)
    model = load_d2seg(d2seg_cfg(separable, layout, "train_crop", weights))
    assert set(model.state_dict()) == set(reference.state_dict())
    images = torch.rand(2, 3, *CROP) * 255
    for ours, theirs in zip(raw_outputs(model, images), raw_outputs(reference, images)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_authors_layout_gives_the_centre_head_one_dsconv(synthetic_root):
    """The authors' DSConv model: centre head = depthwise 5x5 on the decoder width + pointwise to
    HEAD_CHANNELS, like the offset head; the project keeps two 3x3 convs there."""
    authors = build_model(d2seg_cfg(True, "authors", "global")).ins_embed_head
    project_layout = build_model(d2seg_cfg(True, "detectron2", "global")).ins_embed_head
    for head in (authors.center_head, authors.offset_head):
        assert head.depthwise.weight.shape == (16, 1, 5, 5)
        assert head.pointwise.weight.shape == (8, 16, 1, 1)
    assert [c.weight.shape for c in project_layout.center_head] == [(16, 16, 3, 3), (8, 16, 3, 3)]


def test_aspp_pooling_global_vs_training_crop(tmp_path, synthetic_root):
    """On a crop-sized input both pool the same window; on a test image twice as large the
    project's window differs from the global pooling that the authors' evaluation uses."""
    _, weights = project_checkpoint(tmp_path, False)
    window = load_d2seg(d2seg_cfg(False, "authors", "train_crop", weights))
    whole = load_d2seg(d2seg_cfg(False, "authors", "global", weights))
    crop = torch.rand(1, 3, *CROP) * 255
    for a, b in zip(raw_outputs(window, crop), raw_outputs(whole, crop)):
        torch.testing.assert_close(a, b)
    large = torch.rand(1, 3, 2 * CROP[0], 2 * CROP[1]) * 255
    pooled_window = window.sem_seg_head.decoder["res5"]["project_conv"].convs[-1][0]
    pooled_whole = whole.sem_seg_head.decoder["res5"]["project_conv"].convs[-1][0]
    assert pooled_window.kernel_size == (CROP[0] // 16, CROP[1] // 16)
    assert isinstance(pooled_whole, torch.nn.AdaptiveAvgPool2d)
    assert not torch.allclose(raw_outputs(window, large)[0], raw_outputs(whole, large)[0])


def test_training_losses_equal_the_projects(tmp_path, synthetic_root):
    from detectron2.data import DatasetCatalog
    from detectron2.utils.events import EventStorage

    from d2seg.data import build_train_mapper

    reference, weights = project_checkpoint(tmp_path, False)
    cfg = d2seg_cfg(False, "authors", "train_crop", weights)
    model = load_d2seg(cfg)
    mapper = build_train_mapper(cfg)
    records = DatasetCatalog.get("d2seg_synthetic_panoptic_train")[:2]
    torch.manual_seed(1)
    batch = [mapper(r) for r in records]
    model.train()
    reference.train()
    with EventStorage():
        ours = model(batch)
        theirs = reference(batch)
    assert set(ours) == set(theirs) == {"loss_sem_seg", "loss_center", "loss_offset"}
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key])


def _random_heads(seed: int, height: int = 40, width: int = 56, peaks: int = 30):
    generator = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, 5, (height, width), generator=generator)
    semantic[:, : width // 4] = 4  # a stuff region
    heatmap = torch.rand(1, height, width, generator=generator) * 0.05
    ys = torch.randint(0, height, (peaks,), generator=generator)
    xs = torch.randint(0, width, (peaks,), generator=generator)
    ys[:4] = torch.tensor([0, height - 1, 0, height - 1])  # centres on the border
    xs[:4] = torch.tensor([0, width - 1, width - 1, 0])
    heatmap[0, ys, xs] = torch.rand(peaks, generator=generator) * 0.8 + 0.15
    offsets = torch.randn(2, height, width, generator=generator) * 6
    return semantic, heatmap, offsets


POSTPROCESS = {"label_divisor": 1000, "stuff_area": 30, "threshold": 0.1, "nms_kernel": 3}


def _both(semantic, heatmap, offsets, top_k):
    thing_ids = [0, 1, 2]
    ours, _ = panoptic_deeplab_inference(
        semantic, heatmap, offsets, thing_ids=torch.tensor(thing_ids), top_k=top_k, **POSTPROCESS
    )
    theirs, _ = get_panoptic_segmentation(
        semantic[None],
        heatmap.clone(),
        offsets,
        thing_ids=set(thing_ids),
        void_label=-1,
        top_k=top_k,
        **POSTPROCESS,
    )
    return ours, theirs[0]


@pytest.mark.parametrize("seed", range(6))
def test_postprocessing_equals_the_project_below_the_top_k_cut(seed):
    semantic, heatmap, offsets = _random_heads(seed)
    ours, theirs = _both(semantic, heatmap, offsets, top_k=200)  # fewer peaks than k
    assert (ours >= 1000).sum() > 0 and (ours % 1000 == 0).sum() > 0  # things and stuff
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_postprocessing_top_k_keeps_k_centres_where_the_project_drops_ties():
    """Documented difference: the project keeps centres scoring strictly above the k-th score,
    so the k-th centre and every centre tied with it are dropped; d2seg keeps exactly k."""
    heatmap = torch.zeros(1, 20, 20)
    heatmap[0, 2, 2], heatmap[0, 2, 10], heatmap[0, 10, 2], heatmap[0, 10, 10] = 0.9, 0.5, 0.5, 0.3
    ours = find_instance_centers(heatmap, threshold=0.1, nms_kernel=3, top_k=2)
    assert ours.tolist() == [[2, 2], [2, 10]]  # the 0.9 peak and one of the tied 0.5 peaks
    from detectron2.projects.panoptic_deeplab.post_processing import find_instance_center

    theirs = find_instance_center(heatmap.clone()[None], threshold=0.1, nms_kernel=3, top_k=2)
    assert theirs.tolist() == [[2, 2]]
    semantic, heatmap, offsets = _random_heads(0)
    ours, theirs = _both(semantic, heatmap, offsets, top_k=10)
    assert len(torch.unique(ours[ours % 1000 > 0])) > len(torch.unique(theirs[theirs % 1000 > 0]))
