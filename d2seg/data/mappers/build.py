"""The mapper registry: the mapper for a model is picked by the names of its components.

A mapper that adds head-specific targets registers itself with :func:`register_mapper` under
the name of the meta-architecture or ROI heads it serves; every other model gets
:class:`~d2seg.data.mappers.base.D2SegDatasetMapper` (Detectron2's mapper with clearer errors).
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.config import CfgNode

from d2seg.data.mappers.base import D2SegDatasetMapper

MAPPERS: dict[str, type] = {}
"""MODEL.META_ARCHITECTURE or MODEL.ROI_HEADS.NAME -> mapper class, built as cls(cfg, is_train)."""


def register_mapper(*component_names: str) -> Callable[[type], type]:
    """Class decorator: use this mapper for models built with any of these component names."""

    def add(mapper_class: type) -> type:
        for name in component_names:
            MAPPERS[name] = mapper_class
        return mapper_class

    return add


def _mapper_class(cfg: CfgNode) -> type:
    for component in (cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.ROI_HEADS.NAME):
        if component in MAPPERS:
            return MAPPERS[component]
    return D2SegDatasetMapper


def build_train_mapper(cfg: CfgNode):
    """The training mapper for the model that `cfg` describes."""
    return _mapper_class(cfg)(cfg, True)


def build_test_mapper(cfg: CfgNode):
    """The inference mapper for the model that `cfg` describes."""
    return _mapper_class(cfg)(cfg, False)
