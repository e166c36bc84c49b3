"""Detectron2's `SemanticSegmentor` with MMSegmentation's inference modes
(mmseg/models/segmentors/encoder_decoder.py): the whole image at once or a sliding window
(TEST.SEM_SEG.CROP_SIZE / STRIDE, logits averaged where windows overlap), and test-time
augmentation over rescaled (TEST.SEM_SEG.SCALES) and flipped (TEST.SEM_SEG.FLIP) copies whose
softmax probabilities are averaged. Training is Detectron2's, unchanged.

The output "sem_seg" holds class probabilities (softmax), K x height x width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from torch import Tensor

from d2seg.config import register_config

INFERENCE_MODES = ("whole", "slide")


def sliding_windows(
    height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of MMSegmentation's `slide_inference` windows: a grid with step `stride`,
    the last row / column shifted back to end at the border, windows clipped to the image."""
    (crop_h, crop_w), (stride_h, stride_w) = crop, stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
            windows.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return windows


@register_config("TEST.SEM_SEG")
def add_semantic_inference_config(cfg: CfgNode) -> None:
    """Inference of D2SegSemanticSegmentor: whole image or sliding window, plus test-time
    augmentation; MMSegmentation's `test_cfg` and its multi-scale flip pipeline."""
    test = cfg.TEST.SEM_SEG = CfgNode()
    test.MODE = "whole"  # "whole" or "slide"
    test.CROP_SIZE = [769, 769]  # sliding window (h, w) (MMSeg 769x769 Cityscapes configs)
    test.STRIDE = [513, 513]  # sliding-window step (h, w)
    test.SCALES = [1.0]  # image rescaling ratios averaged (MMSeg TTA: 0.5 ... 1.75)
    test.FLIP = False  # also average the horizontally flipped image


@META_ARCH_REGISTRY.register()
class D2SegSemanticSegmentor(SemanticSegmentor):
    """Args (beyond `SemanticSegmentor`'s): mode ("whole" | "slide"), crop_size and stride
    (h, w) of the sliding window, scales (rescaling ratios) and flip for test-time
    augmentation."""

    @configurable
    def __init__(
        self,
        *,
        mode: str = "whole",
        crop_size: tuple[int, int] = (769, 769),
        stride: tuple[int, int] = (513, 513),
        scales: tuple[float, ...] = (1.0,),
        flip: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in INFERENCE_MODES:
            raise ValueError(f"TEST.SEM_SEG.MODE {mode!r} is not one of {INFERENCE_MODES}")
        if len(crop_size) != 2 or len(stride) != 2 or min(*crop_size, *stride) <= 0:
            raise ValueError(
                f"TEST.SEM_SEG.CROP_SIZE {crop_size} and STRIDE {stride} must be two positive "
                "integers (h, w)"
            )
        if not scales or min(scales) <= 0:
            raise ValueError(f"TEST.SEM_SEG.SCALES {scales} must be positive ratios")
        self.mode = mode
        self.crop_size = tuple(crop_size)
        self.stride = tuple(stride)
        self.scales = tuple(scales)
        self.flip = flip

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        test = cfg.TEST.SEM_SEG
        return super().from_config(cfg) | {
            "mode": test.MODE,
            "crop_size": tuple(test.CROP_SIZE),
            "stride": tuple(test.STRIDE),
            "scales": tuple(test.SCALES),
            "flip": test.FLIP,
        }

    def forward(self, batched_inputs: list[dict]):
        """Training: Detectron2's. Inference: images of the same size run as one batch (no
        padding, so each image's output equals the one it gets alone); one dict per image."""
        if self.training:
            return super().forward(batched_inputs)
        same_size: dict[tuple[int, int], list[int]] = {}
        for index, inputs in enumerate(batched_inputs):
            same_size.setdefault(tuple(inputs["image"].shape[-2:]), []).append(index)
        results: list[dict] = [{} for _ in batched_inputs]
        for size, indices in same_size.items():
            images = torch.stack([batched_inputs[i]["image"].to(self.device) for i in indices])
            probs = self.inference((images - self.pixel_mean) / self.pixel_std)
            for index, image_probs in zip(indices, probs):
                height = batched_inputs[index].get("height", size[0])
                width = batched_inputs[index].get("width", size[1])
                results[index]["sem_seg"] = sem_seg_postprocess(image_probs, size, height, width)
        return results

    def inference(self, images: Tensor) -> Tensor:
        """Softmax probabilities (N, K, H, W) of normalised images (N, 3, H, W), averaged over
        the scales and flips of test-time augmentation."""
        size = images.shape[-2:]
        total = None
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                scaled_size = [round(s * scale) for s in size]
                scaled = F.interpolate(images, scaled_size, mode="bilinear", align_corners=False)
            for flipped in (False, True) if self.flip else (False,):
                x = scaled.flip(-1) if flipped else scaled
                logits = self.whole(x) if self.mode == "whole" else self.slide(x)
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits, size, mode="bilinear", align_corners=False)
                probs = logits.softmax(dim=1)
                total = probs if total is None else total + probs
        return total / (len(self.scales) * (2 if self.flip else 1))

    def whole(self, images: Tensor) -> Tensor:
        """Logits of the whole images, padded at the bottom / right to the backbone's size
        divisibility, then cropped back."""
        height, width = images.shape[-2:]
        divisor = max(self.backbone.size_divisibility, 1)
        pad_h, pad_w = -height % divisor, -width % divisor
        padded = F.pad(images, (0, pad_w, 0, pad_h))
        logits, _ = self.sem_seg_head(self.backbone(padded))
        return logits[..., :height, :width]

    def slide(self, images: Tensor) -> Tensor:
        """Logits averaged over the sliding windows that cover each pixel."""
        height, width = images.shape[-2:]
        total, count = None, images.new_zeros((1, 1, height, width))
        for y1, y2, x1, x2 in sliding_windows(height, width, self.crop_size, self.stride):
            logits = self.whole(images[..., y1:y2, x1:x2])
            if total is None:
                total = images.new_zeros((images.shape[0], logits.shape[1], height, width))
            total[..., y1:y2, x1:x2] += logits
            count[..., y1:y2, x1:x2] += 1
        return total / count
