"""Panoptic-DeepLab (Cheng et al., CVPR 2020): bottom-up panoptic segmentation.

A shared backbone feeds a semantic branch and an instance branch (centre heatmap + offsets),
both DeepLabV3+ decoders at stride 4 (`semantic_head`, `instance_head`); post-processing
groups thing pixels around the centres (`postprocessing`).

Compared with Detectron2's project meta-architecture (`PanopticDeepLab`, same parameter names,
so its checkpoints load): offsets are rescaled when the output size differs from the input
size, top-k keeps exactly k centres (the project drops those tied with the k-th), thing pixels are
grouped in bounded memory, and no DSConv flag has to be kept equal in two config nodes.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.projects.panoptic_deeplab import build_ins_embed_branch
from detectron2.structures import BitMasks, ImageList, Instances
from torch import nn

from d2seg.config import register_config
from d2seg.modeling.panoptic_deeplab.instance_head import unless_panoptic_deeplab
from d2seg.modeling.panoptic_deeplab.postprocessing import panoptic_deeplab_inference

# padding of each training target when images are batched (None: the semantic ignore label)
_TARGET_PADDING = {
    "sem_seg": None,
    "sem_seg_weights": 0,
    "center": 0,
    "center_weights": 0,
    "offset": 0,
    "offset_weights": 0,
}


@register_config("MODEL.PANOPTIC_DEEPLAB", unread_reason=unless_panoptic_deeplab)
def add_panoptic_deeplab_config(cfg: CfgNode) -> None:
    """Meta-architecture, decoder layout and post-processing. Defaults are the paper's
    Cityscapes setting, as in the authors' reference (bowenc0221/panoptic-deeplab) and
    Detectron2's project; COCO configs override STUFF_AREA and NMS_KERNEL."""
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


@META_ARCH_REGISTRY.register()
class D2SegPanopticDeepLab(nn.Module):
    """Backbone + semantic branch + instance branch; outputs `sem_seg`, `panoptic_seg` (ids
    `class * label_divisor + instance`, VOID -1, segments_info None) and `instances`."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        ins_embed_head: nn.Module,
        pixel_mean: list[float],
        pixel_std: list[float],
        thing_ids: list[int],
        label_divisor: int,
        stuff_area: int,
        center_threshold: float,
        nms_kernel: int,
        top_k: int,
        predict_instances: bool,
        size_divisibility: int,
        chunk_size: int,
    ):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.register_buffer("thing_ids", torch.tensor(thing_ids, dtype=torch.long), False)
        self.label_divisor = label_divisor
        self.stuff_area = stuff_area
        self.center_threshold = center_threshold
        self.nms_kernel = nms_kernel
        self.top_k = top_k
        self.predict_instances = predict_instances
        self.size_divisibility = (
            size_divisibility if size_divisibility > 0 else backbone.size_divisibility
        )
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        pdl = cfg.MODEL.PANOPTIC_DEEPLAB
        dataset = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else cfg.DATASETS.TEST[0]
        metadata = MetadataCatalog.get(dataset)
        if not metadata.get("thing_dataset_id_to_contiguous_id"):
            raise KeyError(
                f"PanopticDeepLab needs thing classes: the metadata of dataset "
                f"{dataset!r} has no thing_dataset_id_to_contiguous_id"
            )
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "ins_embed_head": build_ins_embed_branch(cfg, shapes),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "thing_ids": sorted(metadata.get("thing_dataset_id_to_contiguous_id", {}).values()),
            "label_divisor": metadata.get("label_divisor", 1000),
            "stuff_area": pdl.STUFF_AREA,
            "center_threshold": pdl.CENTER_THRESHOLD,
            "nms_kernel": pdl.NMS_KERNEL,
            "top_k": pdl.TOP_K_INSTANCE,
            "predict_instances": pdl.PREDICT_INSTANCES,
            "size_divisibility": pdl.SIZE_DIVISIBILITY,
            "chunk_size": pdl.GROUPING_CHUNK_SIZE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        """Training: the dicts carry the six target maps of the mapper; returns the losses
        `loss_sem_seg`, `loss_center`, `loss_offset`. Inference: one dict per image with
        `sem_seg`, `panoptic_seg` and (PREDICT_INSTANCES) `instances`."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        images = ImageList.from_tensors(images, self.size_divisibility)
        features = self.backbone(images.tensor)
        if self.training:
            targets = {
                key: ImageList.from_tensors(
                    [x[key].to(self.device) for x in batched_inputs],
                    self.size_divisibility,
                    pad_value=self.sem_seg_head.ignore_value if pad is None else pad,
                ).tensor
                for key, pad in _TARGET_PADDING.items()
            }
            _, losses = self.sem_seg_head(features, targets["sem_seg"], targets["sem_seg_weights"])
            _, _, center_losses, offset_losses = self.ins_embed_head(
                features,
                targets["center"].unsqueeze(1),
                targets["center_weights"],
                targets["offset"],
                targets["offset_weights"],
            )
            return {**losses, **center_losses, **offset_losses}
        sem_logits, _ = self.sem_seg_head(features)
        center, offset, _, _ = self.ins_embed_head(features)
        return [
            self._inference(sem_logits[i], center[i], offset[i], image_size, inputs)
            for i, (image_size, inputs) in enumerate(zip(images.image_sizes, batched_inputs))
        ]

    def _inference(self, sem_logits, center, offset, image_size, inputs) -> dict:
        height = inputs.get("height", image_size[0])
        width = inputs.get("width", image_size[1])
        sem_logits = sem_seg_postprocess(sem_logits, image_size, height, width)
        center = sem_seg_postprocess(center, image_size, height, width)
        offset = sem_seg_postprocess(offset, image_size, height, width)
        offset = offset * offset.new_tensor([height / image_size[0], width / image_size[1]]).view(
            2, 1, 1
        )  # into output pixels
        sem_seg = sem_logits.argmax(dim=0)
        panoptic, _ = panoptic_deeplab_inference(
            sem_seg,
            center,
            offset,
            thing_ids=self.thing_ids,
            label_divisor=self.label_divisor,
            stuff_area=self.stuff_area,
            threshold=self.center_threshold,
            nms_kernel=self.nms_kernel,
            top_k=self.top_k,
            chunk_size=self.chunk_size,
        )
        result = {"sem_seg": sem_logits, "panoptic_seg": (panoptic, None)}
        if self.predict_instances:
            result["instances"] = self._instances(panoptic, sem_logits.softmax(dim=0), center[0])
        return result

    def _instances(
        self, panoptic: torch.Tensor, probabilities: torch.Tensor, heatmap: torch.Tensor
    ) -> Instances:
        """One instance per thing segment; score = mean class probability over the mask x the
        centre heatmap at the mask's centroid (the reference's instance score)."""
        thing_ids = set(self.thing_ids.tolist())
        labels = [
            v
            for v in torch.unique(panoptic).tolist()
            if v >= 0 and v // self.label_divisor in thing_ids
        ]
        instances = Instances(panoptic.shape)
        masks = (
            torch.stack([panoptic == v for v in labels])
            if labels
            else torch.zeros(0, *panoptic.shape, dtype=torch.bool, device=panoptic.device)
        )
        classes = torch.tensor(
            [v // self.label_divisor for v in labels], dtype=torch.long, device=panoptic.device
        )
        scores = []
        for mask, category in zip(masks, classes):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            semantic_score = probabilities[category][mask].mean()
            center_score = heatmap[int(ys.float().mean()), int(xs.float().mean())]
            scores.append(semantic_score * center_score)
        instances.pred_masks = masks
        instances.pred_classes = classes
        instances.scores = torch.stack(scores) if scores else torch.zeros(0, device=panoptic.device)
        instances.pred_boxes = BitMasks(masks).get_bounding_boxes()
        return instances
