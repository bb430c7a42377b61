"""A checkpoint file to a model: read the format -> resolve the config -> check the weights -> build.

`read_checkpoint` stops before the model (what `vitexport info` shows); `load_model` builds it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport.checkpoint.foreign.common import drop_index_buffers
from vitexport.checkpoint.formats import contents, read_raw, sha256_file
from vitexport.checkpoint.release import convert_release, release_meta
from vitexport.checkpoint.resolve import config_from_args, resolve_config
from vitexport.checkpoint.weights import build_model, check_tensors
from vitexport.model.config import ViTConfig, load_config_arg

logger = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """What a checkpoint file holds once read: config, weights and travelling metadata."""

    config: ViTConfig
    state_dict: dict[str, torch.Tensor]
    path: Path
    format: str
    config_source: str
    sha256: str
    preprocess: dict[str, Any] | None = None
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "preprocess": self.preprocess,
            "labels": self.labels,
            "source": {
                "path": str(self.path),
                "format": self.format,
                "config_source": self.config_source,
                "sha256": self.sha256,
                **self.extra.get("release", {}),  # a release format: its head and the output it equals
            },
        }


def read_checkpoint(
    path: str | os.PathLike[str],
    config: dict[str, Any] | str | os.PathLike[str] | None = None,
    use_ema: bool = False,
) -> Checkpoint:
    """Read any supported checkpoint and resolve its config (see `load_model`).

    ``use_ema`` takes a training checkpoint's EMA weights; on a file without them (a plain
    state dict, safetensors, a vitexport checkpoint, a release format) it is an error naming the keys there are.
    Release formats (OpenAI CLIP, open_clip, DINOv2, big_vision ``.npz``, transformers folders) are converted
    to timm's layout first (`vitexport.checkpoint.release`).
    """
    file, kind, obj = read_raw(path)
    explicit = load_config_arg(str(config) if isinstance(config, os.PathLike) else config)
    found = contents(file, kind, obj, use_ema)
    drop_index_buffers(found.state_dict)  # integer position_ids and the like: not weights
    check_tensors(found.state_dict, repr(str(file)))  # dense floats backed by the file, before any shape is used
    explicit = convert_release(found, file, explicit, use_ema)
    notes = resolve_config(found, file, explicit, str(path))
    for note in notes:
        logger.warning("%s", note)
    if found.release is not None:
        notes = [*found.release.notes, *notes]
    cfg = config_from_args(found.args, f"model config ({found.source})")
    return Checkpoint(
        config=cfg,
        state_dict=found.state_dict,
        path=file,
        format=found.format,
        config_source=found.source,
        sha256=sha256_file(file),
        preprocess=found.preprocess,
        labels=[str(v) for v in found.labels] if found.labels else None,
        extra={"notes": notes, "release": release_meta(found.release)},
    )


def load_model(
    path: str | os.PathLike[str],
    config: dict[str, Any] | str | os.PathLike[str] | None = None,
    use_ema: bool = False,
):
    """Build the dynamic-pad ViT from a checkpoint file, in eval mode, without executing its code.

    ``config`` is a dict of timm keyword arguments, a path to a JSON file of them, or a
    timm hub ``config.json``. Without it the config comes from the checkpoint itself
    (vitexport format), its ``arch`` (timm training checkpoints), a ``config.json``
    beside the weights, or the tensor shapes.
    """
    ckpt = read_checkpoint(path, config=config, use_ema=use_ema)
    model = build_model(ckpt.config, ckpt.state_dict, repr(str(ckpt.path)))  # checked before it is allocated
    model.meta = ckpt.meta()
    return model


def describe_checkpoint(ckpt: Checkpoint) -> dict[str, Any]:
    """Summary fields for `vitexport info`."""
    return {
        "path": str(ckpt.path),
        "format": ckpt.format,
        "config_source": ckpt.config_source,
        "sha256": ckpt.sha256,
        "preprocess": ckpt.preprocess,
        "labels": ckpt.labels,
        "notes": ckpt.extra.get("notes", []),
        **ckpt.extra.get("release", {}),
    }


__all__ = ["Checkpoint", "describe_checkpoint", "load_model", "read_checkpoint"]
