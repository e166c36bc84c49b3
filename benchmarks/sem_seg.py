#!/usr/bin/env python
"""Parameters, fvcore GFLOPs and CPU latency of the semantic heads at 512 x 1024, next to
MMSegmentation's figures for the same models, in one run.

Each model is a head's Cityscapes config (R-50-D8; UPerNet's R-50 is undilated; DeepLab v2 and
OCRNet have R-101 configs only; LR-ASPP and the HRNet OCRNets their timm backbones; UPerNet
Swin-T its ADE20K config), built with random weights and BN in place of SyncBN. Parameters are
the whole model's, auxiliary FCN head included, and FLOPs those of inference (where only the
OCRNets run the auxiliary head), as MMSegmentation's `tools/analysis_tools/get_flops.py`
reports them; fvcore counts one multiply-add as one flop, as that script does. Latency: one
3 x 512 x 1024 image through the whole model (`D2SegSemanticSegmentor.whole`), best of
--repeats runs, torch threads = --threads.

The MMSegmentation column (`mmseg_reference`): MMSegmentation publishes no parameter or FLOP
count per model, so each reference is computed here from MMSegmentation's architecture
definitions (its `configs/_base_/models/*.py` and the backbone / head modules), written out
layer by layer: every conv's k x k x C_in / groups x C_out weights (+ bias, + 2 per BN channel)
and its multiply-adds at its output resolution, plus the attention matrix products. Elementwise
work (BN, ReLU, resizes), which fvcore partly counts, is left out of the reference. The only
figure MMSegmentation prints, the example output of `get_flops.py` in its docs (48.98 M,
1429.68 GMac at 2048 x 1024, i.e. 357.4 at 512 x 1024; the config is not named there), is
PSPNet R-50-D8's: the reference below reproduces it. UPerNet Swin-T is compared with the Swin
paper's published figures instead. Heads MMSegmentation does not have (DenseASPP, DeepLab v2)
get none.

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
    "lraspp": "lraspp_M-V3-D8_512x1024_320k.yaml",
    "ocrnet_hr18": "ocrnet_HRNetV2_W18_512x1024_80k.yaml",
    "ocrnet_hr48": "ocrnet_HRNetV2_W48_512x1024_80k.yaml",
    "upernet_swin_t": "../ADE20K-SemanticSegmentation/upernet_Swin_T_512x512_160k.yaml",
}
# Published figures where a model's authors give them: UPerNet Swin-T (150 classes), Swin paper
# (Liu et al., ICCV 2021) table 3: 60 M parameters, 945 GFLOPs at 512 x 2048, i.e. 472.5 at
# 512 x 1024 (window attention and convs both scale with the pixel count).
PUBLISHED = {"upernet_swin_t": (60.0, 945 / 2)}
SIZE = (512, 1024)
NUM_CLASSES = 19


# ------------------------------------------------ MMSegmentation's architectures, written out


class Count:
    """Parameters and multiply-adds of a model, layer by layer."""

    def __init__(self) -> None:
        self.params = 0
        self.macs = 0

    def conv(
        self,
        k: int,
        c_in: int,
        c_out: int,
        pixels: int,
        *,
        bias: bool = False,
        bn: bool = True,
        groups: int = 1,
    ) -> None:
        """A k x k conv (+ BN: MMSegmentation's ConvModule) producing `pixels` positions."""
        weights = k * k * (c_in // groups) * c_out
        self.params += weights + (c_out if bias else 0) + (2 * c_out if bn else 0)
        self.macs += weights * pixels

    def sep_conv(self, c_in: int, c_out: int, pixels: int) -> None:
        """DepthwiseSeparableConvModule: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU."""
        self.conv(3, c_in, c_in, pixels, groups=c_in)
        self.conv(1, c_in, c_out, pixels)

    def matmul(self, m: int, k: int, n: int) -> None:
        """An (m x k) @ (k x n) product."""
        self.macs += m * k * n

    def classifier(self, channels: int, pixels: int) -> None:
        """BaseDecodeHead.conv_seg: a 1x1 conv with bias to the classes."""
        self.conv(1, channels, NUM_CLASSES, pixels, bias=True, bn=False)


def resnet_v1c(count: Count, depth: int, dilated: bool, h: int, w: int) -> None:
    """MMSegmentation's ResNetV1c (`resnet.py`): 32-32-64 3x3 stem, stride in the 3x3 conv;
    D8: res4 / res5 keep stride 8 (dilated). Spatial sizes follow the (h, w) input."""
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    size = (h // 2) * (w // 2)
    count.conv(3, 3, 32, size)
    count.conv(3, 32, 32, size)
    count.conv(3, 32, 64, size)
    stride, in_channels = 4, 64
    for stage, num_blocks in enumerate(blocks):
        width = 64 * 2**stage
        out_stride = stride if stage == 0 or (dilated and stage >= 2) else stride * 2
        for block in range(num_blocks):
            in_pixels = (h // stride) * (w // stride)
            out_pixels = (h // out_stride) * (w // out_stride)
            count.conv(1, in_channels, width, in_pixels if block == 0 else out_pixels)
            count.conv(3, width, width, out_pixels)
            count.conv(1, width, 4 * width, out_pixels)
            if block == 0:
                count.conv(1, in_channels, 4 * width, out_pixels)
            in_channels, stride = 4 * width, out_stride


def _aux_fcn(count: Count, run: bool, pixels: int) -> None:
    """The auxiliary FCNHead on res4 (1024 -> 256, 3x3): parameters always, multiply-adds
    only when inference runs it (OCRNet's cascade)."""
    macs = count.macs
    count.conv(3, 1024, 256, pixels)
    count.classifier(256, pixels)
    if not run:
        count.macs = macs


def _ppm(count: Count, c_in: int, channels: int) -> None:
    for bins in (1, 2, 3, 6):  # PPM: adaptive pool to bins x bins, 1x1 ConvModule
        count.conv(1, c_in, channels, bins * bins)


def ocr(count: Count, c_in: int, pixels: int) -> None:
    """OCRHead (512 channels, 256-d keys) after the region logits; its classifier included."""
    count.conv(3, c_in, 512, pixels)  # bottleneck
    count.matmul(512, pixels, NUM_CLASSES)  # object region representations
    count.conv(1, 512, 256, pixels)  # query: two ConvModules over the pixels
    count.conv(1, 256, 256, pixels)
    count.conv(1, 512, 256, NUM_CLASSES)  # key: the same over the regions
    count.conv(1, 256, 256, NUM_CLASSES)
    count.conv(1, 512, 256, NUM_CLASSES)  # value
    count.matmul(pixels, 256, NUM_CLASSES)
    count.matmul(pixels, NUM_CLASSES, 256)
    count.conv(1, 256, 512, pixels)  # out
    count.conv(1, 1024, 512, pixels)  # fusion of [context, feature]
    count.classifier(512, pixels)


def hrnet_v2(count: Count, width: int, h: int, w: int) -> list[int]:
    """MMSegmentation's HRNet (`hrnet.py`, ocrnet_hr18 / hr48 `extra`): two stride-2 3x3
    stem convs, 4 bottlenecks (64 -> 256), then stages of 1 / 4 / 3 modules with 2 / 3 / 4
    branches (widths C, 2C, 4C, 8C) of 4 basic blocks each, every module ending in the fuse
    layers (1x1 conv + upsampling from lower branches, chains of stride-2 3x3 convs from
    higher ones), each new branch made by a stride-2 3x3 conv from the last one. Returns the
    branch widths."""
    pixels = [(h // 2 ** (2 + i)) * (w // 2 ** (2 + i)) for i in range(4)]
    count.conv(3, 3, 64, (h // 2) * (w // 2))
    count.conv(3, 64, 64, pixels[0])
    for block in range(4):
        count.conv(1, 64 if block == 0 else 256, 64, pixels[0])
        count.conv(3, 64, 64, pixels[0])
        count.conv(1, 64, 256, pixels[0])
    count.conv(1, 64, 256, pixels[0])  # downsample of the first bottleneck
    widths = [width * 2**i for i in range(4)]
    count.conv(3, 256, widths[0], pixels[0])  # transition 1
    count.conv(3, 256, widths[1], pixels[1])
    for branches, modules in ((2, 1), (3, 4), (4, 3)):
        if branches > 2:  # transition: a new branch from the last one
            count.conv(3, widths[branches - 2], widths[branches - 1], pixels[branches - 1])
        for _ in range(modules):
            for b in range(branches):
                for _ in range(4 * 2):  # 4 basic blocks of two 3x3 convs
                    count.conv(3, widths[b], widths[b], pixels[b])
            for i in range(branches):  # fuse into branch i from branch j
                for j in range(branches):
                    if j > i:
                        count.conv(1, widths[j], widths[i], pixels[j])
                    for k in range(i - j):  # j < i: i - j stride-2 convs
                        last = k == i - j - 1
                        count.conv(
                            3, widths[j], widths[i] if last else widths[j], pixels[j + k + 1]
                        )
    return widths


# MMSegmentation's MobileNetV3-Large `arch_settings`: (kernel, expanded, out, SE, stride)
MOBILENET_V3_LARGE = [
    (3, 16, 16, False, 1),
    (3, 64, 24, False, 2),
    (3, 72, 24, False, 1),
    (5, 72, 40, True, 2),
    (5, 120, 40, True, 1),
    (5, 120, 40, True, 1),
    (3, 240, 80, False, 2),
    (3, 200, 80, False, 1),
    (3, 184, 80, False, 1),
    (3, 184, 80, False, 1),
    (3, 480, 112, True, 1),
    (3, 672, 112, True, 1),
    (5, 672, 160, True, 2),
    (5, 960, 160, True, 1),
    (5, 960, 160, True, 1),
]


def mobilenet_v3_d8(count: Count, h: int, w: int) -> None:
    """MMSegmentation's MobileNetV3-Large (`mobilenet_v3.py`) made D8: the stride-2 blocks
    after stride 8 keep stride 1 (dilated instead). Stem 3x3 to 16 (stride 2), 15 inverted
    residuals (1x1 expansion where expanded != in, k x k depthwise, squeeze-excitation to
    make_divisible(expanded / 4, 8) with biased 1x1 convs, 1x1 projection), a 1x1 conv to 960."""
    stride, channels = 2, 16
    count.conv(3, 3, 16, (h // 2) * (w // 2))
    for kernel, expanded, out, se, block_stride in MOBILENET_V3_LARGE:
        in_pixels = (h // stride) * (w // stride)
        stride = min(stride * block_stride, 8)
        pixels = (h // stride) * (w // stride)
        if expanded != channels:
            count.conv(1, channels, expanded, in_pixels)
        count.conv(kernel, expanded, expanded, pixels, groups=expanded)
        if se:
            squeezed = max(8, int(expanded / 4 + 4) // 8 * 8)  # make_divisible: nearest 8,
            squeezed += 8 if squeezed < 0.9 * expanded / 4 else 0  # not below 90 %
            count.conv(1, expanded, squeezed, 1, bias=True, bn=False)
            count.conv(1, squeezed, expanded, 1, bias=True, bn=False)
        count.conv(1, expanded, out, pixels)
        channels = out
    count.conv(1, channels, 960, (h // 8) * (w // 8))


def lraspp(count: Count, h: int, w: int) -> None:
    """LRASPPHead on (16 @ 2, 24 @ 4, 960 @ 8), 128 channels, branches 32 / 64; the 49 x 49
    pool with stride (16, 20) leaves (64 - 49) // 16 + 1 = 1 x (128 - 49) // 20 + 1 = 4 cells."""
    p2, p4, p8 = ((h // s) * (w // s) for s in (2, 4, 8))
    count.conv(1, 960, 128, p8)  # aspp_conv
    count.conv(1, 960, 128, ((h // 8 - 49) // 16 + 1) * ((w // 8 - 49) // 20 + 1), bn=False)
    count.conv(1, 128, 128, p8, bias=True, bn=False)  # conv_up_input
    count.conv(1, 24, 64, p4, bn=False)
    count.conv(1, 128 + 64, 128, p4)
    count.conv(1, 16, 32, p2, bn=False)
    count.conv(1, 128 + 32, 128, p2)
    count.classifier(128, p2)


def mmseg_reference(name: str) -> tuple[float, float] | None:
    """(M params, GMACs) of MMSegmentation's version of a head's model at 512 x 1024, or None."""
    if name in PUBLISHED:
        return PUBLISHED[name]
    h, w = SIZE
    p8, p4 = (h // 8) * (w // 8), (h // 4) * (w // 4)  # positions at stride 8 / 4
    c = Count()
    if name == "lraspp":
        mobilenet_v3_d8(c, h, w)
        lraspp(c, h, w)
        return c.params / 1e6, c.macs / 1e9
    if name in ("ocrnet_hr18", "ocrnet_hr48"):  # FCN + OCR cascade on the concatenated branches
        concat = sum(hrnet_v2(c, int(name[-2:]), h, w))
        c.conv(1, concat, concat, p4)  # the FCN head: regions (run at inference)
        c.classifier(concat, p4)
        ocr(c, concat, p4)
        return c.params / 1e6, c.macs / 1e9
    resnet_v1c(c, 101 if name == "ocrnet" else 50, dilated=name != "upernet", h=h, w=w)
    _aux_fcn(c, run=name == "ocrnet", pixels=p8 if name != "upernet" else (h // 16) * (w // 16))
    if name == "fcn":
        c.conv(3, 2048, 512, p8)
        c.conv(3, 512, 512, p8)
        c.conv(3, 2048 + 512, 512, p8)
    elif name == "pspnet":
        _ppm(c, 2048, 512)
        c.conv(3, 2048 + 4 * 512, 512, p8)
    elif name in ("deeplabv3", "deeplabv3plus"):
        c.conv(1, 2048, 512, 1)  # image pool
        c.conv(1, 2048, 512, p8)
        for _ in range(3):  # rates 12 / 24 / 36
            if name == "deeplabv3":
                c.conv(3, 2048, 512, p8)
            else:
                c.sep_conv(2048, 512, p8)
        c.conv(3, 5 * 512, 512, p8)
        if name == "deeplabv3plus":  # decoder at stride 4, classifier there
            c.conv(1, 256, 48, p4)
            c.sep_conv(512 + 48, 512, p4)
            c.sep_conv(512, 512, p4)
            c.classifier(512, p4)
            return c.params / 1e6, c.macs / 1e9
    elif name == "danet":
        for _ in range(2):  # PAM and CAM branches: 3x3 in, attention, 3x3 out
            c.conv(3, 2048, 512, p8)
            c.conv(3, 512, 512, p8)
        c.conv(1, 512, 64, p8, bias=True, bn=False)  # PAM query, key, value
        c.conv(1, 512, 64, p8, bias=True, bn=False)
        c.conv(1, 512, 512, p8, bias=True, bn=False)
        c.params += 2  # PAM and CAM gamma
        c.matmul(p8, 64, p8)  # PAM energy
        c.matmul(512, p8, p8)  # PAM output
        c.matmul(512, p8, 512)  # CAM energy
        c.matmul(512, 512, p8)  # CAM output
        c.classifier(512, p8)  # DAHead.forward also runs the PAM and CAM classifiers
        c.classifier(512, p8)
    elif name == "ccnet":
        c.conv(3, 2048, 512, p8)
        attention = Count()  # one criss-cross module (query, key, value), applied twice
        attention.conv(1, 512, 64, p8, bias=True, bn=False)
        attention.conv(1, 512, 64, p8, bias=True, bn=False)
        attention.conv(1, 512, 512, p8, bias=True, bn=False)
        c.params += attention.params + 1  # + gamma
        c.macs += 2 * attention.macs
        for _ in range(2):  # energies over the row and the column, then the output
            c.matmul(p8, 64, h // 8 + w // 8)
            c.matmul(p8, h // 8 + w // 8, 512)
        c.conv(3, 512, 512, p8)
        c.conv(3, 2048 + 512, 512, p8)
    elif name == "psanet":  # bi-direction, shrink factor 2, 97 x 97 masks
        shrunk = ((h // 8 - 1) // 2 + 1) * ((w // 8 - 1) // 2 + 1)
        for _ in range(2):  # collect and distribute branches
            c.conv(1, 2048, 512, p8)  # reduce, at full size, then shrunk
            c.conv(1, 512, 512, shrunk)  # attention: ConvModule, then 1x1 to the mask
            c.conv(1, 512, 97 * 97, shrunk, bn=False)
            c.matmul(512, shrunk, shrunk)
        c.conv(1, 1024, 2048, shrunk)  # proj, then resized back
        c.conv(3, 2 * 2048, 512, p8)  # bottleneck over [input, proj]
    elif name == "isanet":
        c.conv(3, 2048, 512, p8)
        for group in (128, 64):  # long range: 8 x 16 groups of 8 x 8; short: 8 x 8 blocks
            for _ in range(2):  # query, key: two 1x1 ConvModules to 256
                c.conv(1, 512, 256, p8)
                c.conv(1, 256, 256, p8)
            c.conv(1, 512, 512, p8, bias=True, bn=False)  # value
            c.conv(1, 512, 512, p8)  # out ConvModule
            c.matmul(p8, 256, group)
            c.matmul(p8, group, 512)
        c.conv(1, 1024, 512, p8)
    elif name == "ann":
        keys = 1 + 9 + 36 + 64  # key / value pooled over 1, 3, 6, 8 bins
        c.conv(1, 2048, 256, p8)  # AFNB: query from res5, key / value from res4
        c.conv(1, 1024, 256, p8)
        c.conv(1, 1024, 256, p8, bias=True, bn=False)
        c.matmul(p8, 256, keys)
        c.matmul(p8, keys, 256)
        c.conv(1, 256, 2048, p8, bias=True, bn=False)
        c.conv(1, 4096, 2048, p8)
        c.conv(3, 2048, 512, p8)
        c.conv(1, 512, 256, p8)  # APNB: shared query / key, value, out, fusion
        c.conv(1, 512, 256, p8, bias=True, bn=False)
        c.matmul(p8, 256, keys)
        c.matmul(p8, keys, 256)
        c.conv(1, 256, 512, p8, bias=True, bn=False)
        c.conv(1, 1024, 512, p8)
    elif name == "upernet":  # undilated: res2..res5 at strides 4..32
        sizes = [(h // s) * (w // s) for s in (4, 8, 16, 32)]
        _ppm(c, 2048, 512)
        c.conv(3, 2048 + 4 * 512, 512, sizes[3])
        for ch, pixels in zip((256, 512, 1024), sizes):
            c.conv(1, ch, 512, pixels)  # lateral
            c.conv(3, 512, 512, pixels)  # FPN conv
        c.conv(3, 4 * 512, 512, sizes[0])
        c.classifier(512, sizes[0])
        return c.params / 1e6, c.macs / 1e9
    elif name == "ocrnet":
        ocr(c, 2048, p8)
        return c.params / 1e6, c.macs / 1e9
    else:
        return None
    c.classifier(512, p8)
    return c.params / 1e6, c.macs / 1e9


# ------------------------------------------------ d2seg's models


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
        ["MODEL.DEVICE", "cpu"]
        + ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.TIMM.NORM", "BN"],
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
    return {"params_m": params / 1e6, "gflops": gflops, "latency_s": min(times) if times else None}


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=2, help="latency runs (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        "| head | config | params (M) | MMSeg params (M) | ratio | GFLOPs (fvcore) | "
        "MMSeg GMACs | ratio | CPU s / image |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.heads:
        r = measure(name, args.repeats)
        ref_params, ref_macs = mmseg_reference(name) or (None, None)
        params_ratio = r["params_m"] / ref_params if ref_params else None
        flops_ratio = r["gflops"] / ref_macs if ref_macs else None
        print(
            f"| {name} | `{os.path.basename(CONFIGS[name])}` | {r['params_m']:.2f} | "
            f"{_cell(ref_params, 2)} | {_cell(params_ratio, 3)} | {r['gflops']:.1f} | "
            f"{_cell(ref_macs, 1)} | {_cell(flops_ratio, 3)} | {_cell(r['latency_s'], 2)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
