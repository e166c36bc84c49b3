"""Attention blocks under float16 autocast stay finite and agree with float32 on activations in
the thousands (which overflow a float16 affinity); every quickstart config trains one step
under bfloat16 autocast with finite losses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from torch import Tensor, nn

from d2seg.config import load_config
from d2seg.modeling.mixed_precision import fp32_softmax_affinity, scaled_dot_product
from d2seg.modeling.roi_heads.parsing import NonLocalBlock2d
from d2seg.modeling.sem_seg.ann_head import PyramidNonLocal
from d2seg.modeling.sem_seg.cc_head import CrissCrossAttention
from d2seg.modeling.sem_seg.da_head import ChannelAttention, PositionAttention
from d2seg.modeling.sem_seg.isa_head import SelfAttention
from d2seg.modeling.sem_seg.ocr_head import ObjectAttention, gather_object_regions
from d2seg.modeling.sem_seg.psa_head import PSABranch
from tests.helpers.configs import (
    CONFIG_ROOT,
    MODEL_CONFIGS,
    fixed_batch,
    tiny_overrides,
    training_split,
)

CHANNELS = 64
# activation std: |x| mostly 1e3 - 1e4, as the FPN maps that overflowed Parsing R-CNN's non-local
MAGNITUDE = 3e3
# float16 keeps 11 significant bits (unit roundoff u = 2^-11 ~ 4.9e-4); a block rounds its
# operands some 3 - 6 times (convs, norms, the value product), so its output may be off by a
# few u of its scale (measured: at most 1.5e-3 over 10 seeds). 5e-3 of the output's largest
# magnitude (~10 u) allows that, while a wrong attention weight (overflow, NaN, another row
# maximum) moves the output by O(1) of its scale.
FP16_TOLERANCE = 5e-3


def blocky_activations(seed: int, size: int = 16, tile: int = 4, patterns: int = 4) -> Tensor:
    """(2, CHANNELS, size, size): every tile x tile square holds one of a few random vectors of
    std MAGNITUDE. The affinities overflow float16, so in float32 each softmax is all but a
    one-hot choice; with few distinct vectors the chosen one leads the next by far more than
    float16's rounding of the queries and keys, so both precisions choose alike."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(patterns, CHANNELS, generator=generator) * MAGNITUDE
    labels = torch.randint(patterns, (2, size // tile, size // tile), generator=generator)
    x = vectors[labels].permute(0, 3, 1, 2)
    return x.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)


def residual(block: nn.Module) -> Callable[[Tensor], Tensor]:
    """What a residual block adds to its input (the input itself would hide the attention);
    DANet / CCNet blocks start with gamma = 0 (nothing added), so gamma is set to 1."""
    if hasattr(block, "gamma"):
        nn.init.ones_(block.gamma)
    return lambda x: block(x) - x


def object_attention() -> Callable[[Tensor], Tensor]:
    block = ObjectAttention(CHANNELS, 32, "BN").eval()
    return lambda x: block(x, gather_object_regions(x, x[:, :5]))


def pyramid_non_local(shared: bool) -> Callable[[Tensor], Tensor]:
    block = PyramidNonLocal(CHANNELS, CHANNELS, 32, CHANNELS, [1, 3, 6, 8], "BN", shared).eval()
    return lambda x: block(x, x if shared else x.flip(-1))  # AFNB: keys from another map


def psa_branch(mode: str) -> Callable[[Tensor], Tensor]:
    """PSANet's attention logits are a conv's output, not a product: scaled to O(1), as trained
    BN statistics would leave them (saturated logits from a conv would make the test measure
    float16 convs, not the attention)."""
    block = PSABranch(CHANNELS, 32, (15, 15), "BN", mode).eval()
    nn.init.normal_(block.attention[-1].weight, std=1 / MAGNITUDE)
    return lambda x: block(x, (8, 8), False)


# each builds a block as a function of one activation map; blocks with BN run in eval mode with
# fresh running statistics, so the activations keep their magnitude
BLOCKS: dict[str, Callable[[], Callable[[Tensor], Tensor]]] = {
    "parsing_non_local": lambda: residual(NonLocalBlock2d(CHANNELS, 32)),
    "danet_position": lambda: residual(PositionAttention(CHANNELS, 8)),
    "danet_channel": lambda: residual(ChannelAttention()),
    "ccnet_criss_cross": lambda: residual(CrissCrossAttention(CHANNELS)),
    "ocr_gather_regions": lambda: lambda x: gather_object_regions(x, x[:, :5]),
    "ocr_object_attention": object_attention,
    "isa_self_attention": lambda: SelfAttention(CHANNELS, 32, "BN").eval(),
    "ann_afnb": lambda: pyramid_non_local(shared=False),
    "ann_apnb": lambda: pyramid_non_local(shared=True),
    "psa_collect": lambda: psa_branch("collect"),
    "psa_distribute": lambda: psa_branch("distribute"),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_attention_block_under_float16_autocast_matches_float32(name):
    torch.manual_seed(0)
    block = BLOCKS[name]()
    x = blocky_activations(seed=1)
    with torch.no_grad():
        expected = block(x)
        with torch.autocast("cpu", dtype=torch.float16):
            actual = block(x)
    assert torch.isfinite(actual).all(), f"{name}: non-finite output under float16 autocast"
    scale = expected.abs().max().item()
    assert scale > 1  # the attention contributes
    error = (actual.float() - expected).abs().max().item()
    assert error <= FP16_TOLERANCE * scale, f"{name}: error {error:.3g} at scale {scale:.3g}"


def test_float32_affinity_is_unchanged_bit_for_bit():
    """In float32 the helper is exactly the plain softmax of the product."""
    query, key = torch.randn(2, 50, 16), torch.randn(2, 16, 30)
    plain = (torch.bmm(query, key) * query.shape[-1] ** -0.5).softmax(dim=-1)
    assert torch.equal(fp32_softmax_affinity(scaled_dot_product, query, key), plain)


def test_float16_affinity_returns_float16_weights_that_sum_to_one():
    query = (torch.randn(1, 40, 256) * MAGNITUDE).half()
    key = (torch.randn(1, 256, 40) * MAGNITUDE).half()
    assert torch.isinf(torch.bmm(query, key)).any()  # the plain float16 product overflows
    weights = fp32_softmax_affinity(torch.bmm, query, key)
    assert weights.dtype == torch.float16
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(1, 40), atol=2e-3, rtol=0)


QUICKSTART = [c for c in MODEL_CONFIGS if c.startswith("quickstart/")]
# bfloat16 convs take PyTorch's slow reference kernels on CPUs without AVX-512 (~9x float32
# here), so the tiny configs' images are halved again
SMALLER_IMAGES = [
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "96",
    "INPUT.CROP.SIZE",
    "(64, 64)",
]


@pytest.mark.parametrize("config", QUICKSTART)
def test_quickstart_config_trains_one_step_under_bfloat16_autocast(config, synthetic_root):
    cfg = load_config(str(CONFIG_ROOT / config), tiny_overrides(config) + SMALLER_IMAGES)
    batch = fixed_batch(cfg, training_split(cfg))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    feature_dtypes = set()
    model.backbone.register_forward_hook(
        lambda module, inputs, features: feature_dtypes.update(f.dtype for f in features.values())
    )
    with EventStorage(0):  # the R-CNN heads log training statistics into it
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert feature_dtypes == {torch.bfloat16}  # the model did run under autocast
    assert all(torch.isfinite(loss).item() for loss in losses.values()), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
