"""Datasets that d2seg generates on first use, written atomically and versioned by a manifest."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable

from d2seg.utils.file_io import atomic_json_dump

MANIFEST = "manifest.json"


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
