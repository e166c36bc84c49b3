"""Detectron2's checkpointer with atomic files and a hard error for unusable weights."""

from __future__ import annotations

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from d2seg.utils.file_io import atomic_open


class D2SegCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` for runs that get killed.

    - ``model_XXXXXXX.pth`` and ``last_checkpoint`` are written to a temporary file and renamed
      into place, so a kill during a save leaves the previous checkpoint and the tag naming it:
      ``last_checkpoint`` always names a complete, loadable file.
    - A local weights file that does not exist raises :class:`FileNotFoundError` naming it.
    - Weights of which not one tensor fits the model (a checkpoint of another architecture)
      raise :class:`ValueError` after Detectron2 has logged the mismatched keys; a partial match
      (e.g. ImageNet weights for the backbone only) loads as in Detectron2.
    """

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file, "wb", durable=True) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w", durable=True) as f:
            f.write(last_filename_basename)

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path!r} (MODEL.WEIGHTS or resume) not found")
        self._loading = path
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint: Any):
        incompatible = super()._load_model(checkpoint)
        # parameters only: Detectron2 leaves pixel_mean / pixel_std and BN counters out of the
        # missing keys
        expected = [name for name, _ in self.model.named_parameters()]
        missing = set(incompatible.missing_keys)
        if expected and all(k in missing for k in expected):
            self._log_incompatible_keys(incompatible)
            raise ValueError(
                f"no weight in {self._loading!r} fits this model ({len(expected)} tensors "
                "missing, mismatched keys logged above): a checkpoint of another architecture?"
            )
        return incompatible
