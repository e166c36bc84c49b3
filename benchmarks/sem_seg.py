#!/usr/bin/env python
"""Parameters, fvcore GFLOPs and CPU latency of the semantic heads at 512 x 1024, in one run.

Each model is a head's Cityscapes config (R-50-D8; UPerNet's R-50 is undilated; DeepLab v2 and
OCRNet have R-101 configs only), built
with random weights and BN in place of SyncBN. Parameters are the whole model's, auxiliary FCN
head included, and FLOPs those of inference (where only OCRNet runs the auxiliary head), as
MMSegmentation's `tools/analysis_tools/get_flops.py` reports them; fvcore counts one multiply-add
as one flop, as that script does. Latency: one 3 x 512 x 1024 image through the whole
model (`D2SegSemanticSegmentor.whole`), best of --repeats runs, torch threads = --threads.

    python benchmarks/sem_seg.py [--heads pspnet deeplabv3 ...] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis

from d2seg.config import load_config

CONFIG_ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")
CONFIGS = {
    "fcn": "fcn_R_50_D8_512x1024_80k.yaml",
    "pspnet": "pspnet_R_50_D8_512x1024_80k.yaml",
    "deeplabv3": "deeplabv3_R_50_D8_512x1024_80k.yaml",
    "deeplabv3plus": "deeplabv3plus_R_50_D8_512x1024_80k.yaml",
    "danet": "danet_R_50_D8_512x1024_80k.yaml",
    "ccnet": "ccnet_R_50_D8_512x1024_80k.yaml",
    "ann": "ann_R_50_D8_512x1024_80k.yaml",
    "psanet": "psanet_R_50_D8_512x1024_80k.yaml",
    "isanet": "isanet_R_50_D8_512x1024_80k.yaml",
    "upernet": "upernet_R_50_512x1024_80k.yaml",
    "denseaspp": "denseaspp_R_50_D8_512x1024_80k.yaml",
    "deeplabv2": "deeplabv2_R_101_D8_512x1024_80k.yaml",
    "ocrnet": "ocrnet_R_101_D8_512x1024_80k.yaml",
}
SIZE = (512, 1024)


class WholeImage(torch.nn.Module):
    """The inference path of one normalised image batch, for fvcore's tracer."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.whole(images)


def measure(name: str, repeats: int) -> dict:
    cfg = load_config(
        os.path.join(CONFIG_ROOT, "Cityscapes-SemanticSegmentation", CONFIGS[name]),
        ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"],
    )
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    images = torch.randn(1, 3, *SIZE)
    wrapper = WholeImage(model).eval()
    with torch.no_grad():
        flops = FlopCountAnalysis(wrapper, images)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        gflops = flops.total() / 1e9
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            wrapper(images)
            times.append(time.perf_counter() - start)
    return {"params_m": params / 1e6, "gflops": gflops, "latency_s": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("| head | config | params (M) | GFLOPs (fvcore, 512x1024) | CPU s / image |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.heads:
        r = measure(name, args.repeats)
        print(
            f"| {name} | `{CONFIGS[name]}` | {r['params_m']:.2f} | {r['gflops']:.1f} | "
            f"{r['latency_s']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
