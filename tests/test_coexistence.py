"""d2seg and the projects an installed Detectron2 ships register into the same global
registries: importing them together, in either order, must work, with no name in common."""

import subprocess
import sys

import pytest

PROJECTS = [
    "detectron2.projects.deeplab",
    "detectron2.projects.panoptic_deeplab",
    "detectron2.projects.point_rend",
]

for _project in PROJECTS:
    pytest.importorskip(_project)


@pytest.mark.parametrize("d2seg_first", [True, False], ids=["d2seg-first", "projects-first"])
def test_d2seg_imports_together_with_detectron2_projects(d2seg_first):
    modules = ["d2seg", *PROJECTS] if d2seg_first else [*PROJECTS, "d2seg"]
    code = "; ".join(f"import {m}" for m in modules)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_registered_name_is_shared_with_detectron2_or_its_projects():
    """The names d2seg adds to each registry (d2seg alone vs Detectron2 alone) and those the
    projects add (projects alone) have nothing in common."""
    script = """
import importlib, json, sys
from detectron2.data import DatasetCatalog
from detectron2.modeling import (BACKBONE_REGISTRY, META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY,
    ROI_BOX_HEAD_REGISTRY, ROI_HEADS_REGISTRY, ROI_KEYPOINT_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY,
    SEM_SEG_HEADS_REGISTRY)
for name in sys.argv[1:]:
    importlib.import_module(name)
from detectron2.projects.panoptic_deeplab import INS_EMBED_BRANCHES_REGISTRY
registries = dict(BACKBONE=BACKBONE_REGISTRY, META_ARCH=META_ARCH_REGISTRY,
    PROPOSAL_GENERATOR=PROPOSAL_GENERATOR_REGISTRY, ROI_BOX_HEAD=ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS=ROI_HEADS_REGISTRY, ROI_KEYPOINT_HEAD=ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD=ROI_MASK_HEAD_REGISTRY, SEM_SEG_HEADS=SEM_SEG_HEADS_REGISTRY,
    INS_EMBED_BRANCHES=INS_EMBED_BRANCHES_REGISTRY)
entries = {k: sorted(name for name, _ in r) for k, r in registries.items()}
entries["DATASETS"] = sorted(DatasetCatalog.list())
print(json.dumps(entries))
"""

    def entries(*modules):
        result = subprocess.run(
            [sys.executable, "-c", script, *modules], capture_output=True, text=True, check=True
        )
        return __import__("json").loads(result.stdout.strip().splitlines()[-1])

    base = entries()
    projects = entries(*PROJECTS)
    ours = entries("d2seg")
    for registry in base:
        added_by_projects = set(projects[registry]) - set(base[registry])
        added_by_d2seg = set(ours[registry]) - set(base[registry])
        assert not added_by_projects & added_by_d2seg, registry
    assert "D2SegPanopticDeepLab" in ours["META_ARCH"]
    assert "build_d2seg_resnet_deeplab_backbone" in ours["BACKBONE"]
    assert "PanopticDeepLab" in projects["META_ARCH"]
