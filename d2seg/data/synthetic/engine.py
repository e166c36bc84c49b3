"""The one routine every synthetic dataset is generated through: once, atomically, versioned.

A dataset is a folder under ``$DETECTRON2_DATASETS`` plus a manifest (generator version and
split sizes/seeds). :func:`ensure_generated` writes the folder only when the manifest on disk
differs, so a rerun is a no-op and a changed generator replaces the stale copy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from d2seg.utils.file_io import atomic_json_dump

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SyntheticSplit:
    """How many images a split holds and the seed its scenes are drawn from."""

    num_images: int
    seed: int


def splits_manifest(generator_version: int, splits: Mapping[str, SyntheticSplit]) -> dict:
    """The manifest of a dataset drawn split by split: its generator version and split specs."""
    return {
        "generator_version": generator_version,
        "splits": {name: vars(spec) for name, spec in splits.items()},
    }


def is_current(root: str, manifest: dict) -> bool:
    """Whether `root` holds a complete copy generated with exactly this `manifest`."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f) == manifest
    except (OSError, ValueError):
        return False


def ensure_generated(
    datasets_root: str, dirname: str, manifest: dict, write: Callable[[str], None]
) -> str:
    """Generate ``datasets_root/dirname`` with `write(folder)` unless a current copy is there.

    `write` fills a temporary sibling folder, which gets the manifest last and is then renamed
    into place: an interrupted run never leaves a half-written dataset, a copy with another
    manifest (older generator, other sizes) is replaced, and concurrent processes (one per GPU)
    agree on one copy. Returns the dataset folder.
    """
    root = os.path.join(datasets_root, dirname)
    if is_current(root, manifest):
        return root
    os.makedirs(datasets_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{dirname}-", dir=datasets_root)
    try:
        write(staging)
        atomic_json_dump(manifest, os.path.join(staging, MANIFEST))
        if os.path.exists(root) and not is_current(root, manifest):
            stale = tempfile.mkdtemp(prefix=f".{dirname}-stale-", dir=datasets_root)
            os.replace(root, os.path.join(stale, "old"))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, root)
        except OSError:
            if not is_current(root, manifest):  # another process won the race, same content
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
