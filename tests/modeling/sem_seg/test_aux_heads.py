"""Auxiliary heads as a list (MODEL.SEM_SEG_HEAD.AUX): the shipped single-auxiliary configs give
bit-identical losses to the flat AUX_* keys they replaced, and several heads each add a loss.

`tests/helpers/decode_head_losses.json` holds the losses (float.hex) that every semantic config
gave on the fixed batch below with d2seg's code before the auxiliary list (commit c7e3ed3, flat
AUX_IN_FEATURE / AUX_CHANNELS keys, the tiny overrides with 8-channel auxiliary heads).
"""

import json
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from d2seg.config import load_config
from d2seg.modeling.sem_seg.decode_head import aux_head_entries, aux_loss_name
from tests.helpers.configs import CONFIG_ROOT, TINY_SEM_SEG, tiny_sem_seg_overrides

BEFORE = json.loads((Path(__file__).parents[2] / "helpers/decode_head_losses.json").read_text())


def fixed_batch(num_classes: int) -> list[dict]:
    generator = torch.Generator().manual_seed(2)
    return [
        {
            "image": torch.rand(3, 96, 128, generator=generator) * 255,
            "sem_seg": torch.randint(0, num_classes, (96, 128), generator=generator),
            "height": 96,
            "width": 128,
        }
        for _ in range(2)
    ]


def training_losses(cfg) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    torch.manual_seed(1)
    with EventStorage():
        losses = model(fixed_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))
    return {name: float(value) for name, value in losses.items()}


@pytest.mark.parametrize("config_name", sorted(BEFORE))
def test_losses_bit_identical_to_flat_aux_keys(config_name):
    if "Swin" in config_name or "HRNet" in config_name or "M-V3" in config_name:
        pytest.importorskip("timm")
    cfg = load_config(str(CONFIG_ROOT / config_name), tiny_sem_seg_overrides(config_name))
    losses = training_losses(cfg)
    assert {k: v.hex() for k, v in losses.items()} == BEFORE[config_name]


def test_several_auxiliary_heads_each_add_their_weighted_loss():
    name = "quickstart/pspnet_R_18_synthetic.yaml"
    aux = [
        {"IN_FEATURE": "res3", "CHANNELS": 8},
        {"IN_FEATURE": "res4", "CHANNELS": 4, "NUM_CONVS": 2, "KERNEL_SIZE": 1},
        {"IN_FEATURE": "res2", "CHANNELS": 4, "LOSS_WEIGHT": 1.0},
    ]
    cfg = load_config(str(CONFIG_ROOT / name), TINY_SEM_SEG + ["MODEL.SEM_SEG_HEAD.AUX", repr(aux)])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    head = model.sem_seg_head
    assert [a["LOSS_WEIGHT"] for a in aux_head_entries(cfg)] == [0.4, 0.4, 1.0]
    assert [len(h[0].convs) for h in head.aux_heads] == [1, 2, 1]
    assert head.aux_heads[1][0].convs[0].kernel_size == (1, 1)
    batch = fixed_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {
        "loss_sem_seg",
        "loss_sem_seg_aux",
        "loss_sem_seg_aux1",
        "loss_sem_seg_aux2",
    }
    assert [aux_loss_name(i) for i in range(3)] == [
        "loss_sem_seg_aux",
        "loss_sem_seg_aux1",
        "loss_sem_seg_aux2",
    ]
    # each auxiliary loss is its own head's cross-entropy times its weight (dropout off)
    model.eval()
    images = torch.stack([b["image"] for b in batch])
    features = model.backbone((images - model.pixel_mean) / model.pixel_std)
    targets = torch.stack([b["sem_seg"] for b in batch])
    direct = head.aux_losses(features, targets)
    for index, entry in enumerate(aux_head_entries(cfg)):
        logits = head.aux_heads[index](features[entry["IN_FEATURE"]])
        expected = head.loss(logits, targets) * entry["LOSS_WEIGHT"]
        torch.testing.assert_close(direct[aux_loss_name(index)], expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "aux, message",
    [
        ("[{'IN_FEATURE': 'res4', 'WIDTH': 8}]", r"AUX\[0\] has unknown keys \['WIDTH'\]"),
        ("[{'IN_FEATURE': 'res4'}, 'res3']", r"AUX\[1\] must be a mapping"),
        ("[{'IN_FEATURE': 'res4', 'CHANNELS': 'wide'}]", r"AUX\[0\].CHANNELS must be a int"),
    ],
)
def test_bad_auxiliary_entries_name_the_entry(aux, message):
    name = "quickstart/pspnet_R_18_synthetic.yaml"
    with pytest.raises(ValueError, match=message):
        load_config(str(CONFIG_ROOT / name), ["MODEL.SEM_SEG_HEAD.AUX", aux])
