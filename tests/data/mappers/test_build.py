"""Mapper selection by the names of the model's components."""

from d2seg.config import load_config
from d2seg.data.mappers import D2SegDatasetMapper
from d2seg.data.mappers.build import MAPPERS, build_train_mapper, register_mapper
from tests.helpers.configs import CONFIG_ROOT, CPU

QUICKSTART = str(CONFIG_ROOT / "quickstart" / "mask_rcnn_R_18_FPN_synthetic.yaml")


def test_registered_mapper_is_picked_by_model_name():
    @register_mapper("D2segTestMarkerROIHeads")
    class MarkerMapper(D2SegDatasetMapper):
        pass

    try:
        cfg = load_config(QUICKSTART, CPU + ["MODEL.ROI_HEADS.NAME", "D2segTestMarkerROIHeads"])
        assert type(build_train_mapper(cfg)) is MarkerMapper
        cfg = load_config(QUICKSTART, CPU)
        assert type(build_train_mapper(cfg)) is D2SegDatasetMapper
    finally:
        MAPPERS.pop("D2segTestMarkerROIHeads")
