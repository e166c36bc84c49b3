#!/usr/bin/env python
"""Convert an ImageNet checkpoint (a state dict file: .pth / .pt / .bin / .safetensors) into
Detectron2's format for the backbone that a d2seg config builds, checked key by key and shape
by shape against that backbone: the output loads through MODEL.WEIGHTS with no missing or
unexpected backbone key, or this script stops with the keys that do not fit.

Two sources:

- ``--source timm``: a timm classification checkpoint (any model) for BACKBONE.NAME
  "build_timm_backbone" with the same MODEL.TIMM.NAME. Keys keep timm's names under the
  adapter's ``backbone.model.`` prefix (flattened modules, e.g. Swin's ``layers.0`` ->
  ``layers_0``, renamed as timm's feature wrappers name them); classifier-only weights (heads,
  HRNet's "incre" modules) are dropped; the adapter's own layers (MODEL.TIMM.OUTPUT_NORM
  LayerNorms) keep their initial values, as MMSegmentation's Swin starts its ``norm{i}``.
- ``--source resnet``: a torchvision ResNet (7x7 stem: ``conv1``, ``bn1``) or a deep-stem
  ResNetV1c in timm's layout (``resnet50c``, ``resnet101c``: ``conv1.0 / .1 / .3 / .4 / .6``,
  ``bn1``), renamed to Detectron2's ResNet (``stem.conv1``, ``res2.0.conv1.norm``,
  ``res2.0.shortcut``, ...) as Detectron2's tools/convert-torchvision-to-d2.py does. A 7x7
  stem maps to MODEL.RESNETS.STEM_TYPE "basic", a deep stem to "deeplab" with
  STEM_OUT_CHANNELS 64 (d2seg's ResNetV1c, the semantic configs' backbone); both put the
  stride in the 3x3 conv, so STRIDE_IN_1X1 must be False. Any other pairing fails.

    python tools/convert_pretrained.py --config-file CFG --source {timm,resnet} IN OUT [KEY VAL ..]
    python tools/convert_pretrained.py \
        --config-file configs/Cityscapes-SemanticSegmentation/lraspp_M-V3-D8_512x1024_320k.yaml \
        --source timm mobilenetv3_large_100.pth mv3_d2.pkl
    python tools/convert_pretrained.py \
        --config-file configs/Cityscapes-SemanticSegmentation/pspnet_R_50_D8_512x1024_80k.yaml \
        --source resnet resnet50c.pth r50_v1c_d2.pkl

The output is a .pkl (Detectron2's model-zoo layout: numpy arrays under "model", with
"__author__", loaded without name heuristics) or, for any other suffix, a torch .pth.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from d2seg.config import load_config

# torchvision / timm ResNet stem names -> Detectron2 stem names, per stem layout
_STEMS = {
    "basic": {"conv1": "stem.conv1", "bn1": "stem.conv1.norm"},
    "deeplab": {
        "conv1.0": "stem.conv1",
        "conv1.1": "stem.conv1.norm",
        "conv1.3": "stem.conv2",
        "conv1.4": "stem.conv2.norm",
        "conv1.6": "stem.conv3",
        "bn1": "stem.conv3.norm",
    },
}
_BLOCK_PARTS = {
    "bn1": "conv1.norm",
    "bn2": "conv2.norm",
    "bn3": "conv3.norm",
    "downsample.0": "shortcut",
    "downsample.1": "shortcut.norm",
}
_CLASSIFIER = ("fc.",)  # torchvision / timm ResNet classifier, not part of the backbone


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from `path`; a {"state_dict": ...} / {"model": ...} wrapper is unwrapped."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors (nor one under 'state_dict')")
    return dict(state)


def _flattened_source_key(key: str, source: Mapping[str, torch.Tensor]) -> str | None:
    """The checkpoint key of a timm feature-wrapper key: itself, or with the first component's
    last "_<i>" turned back into ".<i>" (timm flattens `layers.0` into `layers_0`)."""
    if key in source:
        return key
    first, _, rest = key.partition(".")
    head, _, index = first.rpartition("_")
    candidate = f"{head}.{index}.{rest}"
    return candidate if head and index.isdigit() and candidate in source else None


def convert_timm(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Checkpoint -> the timm adapter's state (target keys). Returns the converted state and
    the target keys the checkpoint lacks (before the adapter-only ones are filled in)."""
    converted, missing = {}, []
    for key, value in target.items():
        if key.startswith("model."):
            found = _flattened_source_key(key[len("model.") :], source)
            if found is not None:
                converted[key] = source[found]
                continue
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
        converted[key] = value  # adapter-only layers (output norms) keep their initial values
    return converted, missing


def _resnet_stem(source: Mapping[str, torch.Tensor]) -> str:
    if "conv1.weight" in source:
        return "basic"
    if "conv1.0.weight" in source:
        return "deeplab"
    raise ValueError(
        "--source resnet: the checkpoint has neither a 7x7 stem ('conv1.weight', torchvision) "
        "nor a deep stem ('conv1.0.weight', ResNetV1c); not a torchvision / timm ResNet"
    )


def resnet_key(key: str, stem: str) -> str | None:
    """Detectron2's name of a torchvision / timm ResNet key (None: classifier)."""
    if key.startswith(_CLASSIFIER):
        return None
    module, _, leaf = key.rpartition(".")
    if module in _STEMS[stem]:
        return f"{_STEMS[stem][module]}.{leaf}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", module)
    if match is None:
        raise ValueError(f"--source resnet: unexpected key {key!r} (not a ResNet stem / stage)")
    stage, block, part = match.groups()
    if part == "downsample.2":
        raise ValueError(
            f"--source resnet: {key!r} is a ResNet-D average-pool shortcut, which Detectron2's "
            "ResNet does not have; use a ResNetV1c (resnet50c) or torchvision checkpoint"
        )
    return f"res{int(stage) + 1}.{block}.{_BLOCK_PARTS.get(part, part)}.{leaf}"


def convert_resnet(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], cfg: CfgNode
) -> dict[str, torch.Tensor]:
    """Checkpoint -> Detectron2 ResNet names, under the backbone's prefix ("bottom_up." in an
    FPN); the stem layout and stride placement are checked against the config first."""
    stem = _resnet_stem(source)
    r = cfg.MODEL.RESNETS
    wanted = "7x7 stem (torchvision)" if stem == "basic" else "deep 3x3 stem (ResNetV1c)"
    if stem != r.STEM_TYPE or (stem == "deeplab" and r.STEM_OUT_CHANNELS != 64):
        raise ValueError(
            f"--source resnet: a {wanted} maps to MODEL.RESNETS.STEM_TYPE {stem!r}"
            + (" with STEM_OUT_CHANNELS 64" if stem == "deeplab" else "")
            + f"; the config has STEM_TYPE {r.STEM_TYPE!r}, STEM_OUT_CHANNELS "
            f"{r.STEM_OUT_CHANNELS}"
        )
    if r.STRIDE_IN_1X1:
        raise ValueError(
            "--source resnet: torchvision / timm ResNets stride in the 3x3 conv; set "
            "MODEL.RESNETS.STRIDE_IN_1X1 False"
        )
    prefix = "bottom_up." if any(k.startswith("bottom_up.") for k in target) else ""
    converted = {}
    for key, value in source.items():
        name = resnet_key(key, stem)
        if name is None or (name.endswith("num_batches_tracked") and prefix + name not in target):
            continue  # the classifier; BN counters where the model's norm has none (FrozenBN)
        converted[prefix + name] = value  # keys the model lacks are reported by check()
    return converted


def check(converted: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError naming the keys that are missing, unexpected or of another shape."""
    missing = sorted(k for k in target if k not in converted and "num_batches_tracked" not in k)
    unexpected = sorted(k for k in converted if k not in target)
    shapes = sorted(
        f"{k}: {tuple(v.shape)} vs the model's {tuple(target[k].shape)}"
        for k, v in converted.items()
        if k in target and v.shape != target[k].shape
    )
    problems = [
        f"{what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    if problems:
        raise ValueError(
            "the checkpoint does not fit the config's backbone: " + "; ".join(problems)
        )


def convert(source: Mapping[str, torch.Tensor], kind: str, cfg: CfgNode) -> dict:
    """Detectron2 state dict ("backbone."-prefixed keys) of the config's backbone."""
    timm_backbone = cfg.MODEL.BACKBONE.NAME == "build_timm_backbone"
    if kind not in ("timm", "resnet"):
        raise ValueError(f"--source must be 'timm' or 'resnet', not {kind!r}")
    if (kind == "timm") != timm_backbone:
        raise ValueError(
            f"--source {kind} does not fill MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME!r}: "
            "--source timm is for 'build_timm_backbone', --source resnet for Detectron2's ResNet"
        )
    target = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))).state_dict()
    if kind == "resnet":
        converted = convert_resnet(source, target, cfg)
    else:
        converted, missing = convert_timm(source, target)
        if missing:
            raise ValueError(
                f"the checkpoint does not fit MODEL.TIMM.NAME {cfg.MODEL.TIMM.NAME!r}: missing "
                f"({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
            )
    check(converted, target)
    return {f"backbone.{k}": v for k, v in converted.items()}


def save(state: Mapping[str, torch.Tensor], path: str) -> None:
    """.pkl: Detectron2's model-zoo layout (numpy, no name heuristics); else torch.save."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if path.endswith(".pkl"):
        data = {
            "model": {k: v.cpu().numpy() for k, v in state.items()},
            "__author__": "d2seg tools/convert_pretrained.py",
            "matching_heuristics": False,
        }
        with open(path, "wb") as f:
            pickle.dump(data, f)
    else:
        torch.save({"model": dict(state)}, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert an ImageNet checkpoint for the backbone a d2seg config builds."
    )
    parser.add_argument("--config-file", required=True, help="config whose backbone to fill")
    parser.add_argument("--source", required=True, choices=["timm", "resnet"])
    parser.add_argument("input", help="ImageNet state dict (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("output", help=".pkl (Detectron2 layout) or .pth")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    state = convert(load_state_dict(args.input), args.source, cfg)
    save(state, args.output)
    print(f"wrote {len(state)} backbone tensors to {args.output}")


if __name__ == "__main__":
    main()
