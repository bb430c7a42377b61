"""Write a vitexport checkpoint: config, weights, preprocessing and labels in one torch file, atomically.

`vitexport.checkpoint.formats` reads it back (format ``vitexport.checkpoint``, version `FORMAT_VERSION`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vitexport._util.files import atomic_file
from vitexport.checkpoint.formats import FORMAT_NAME, FORMAT_VERSION


def save_checkpoint(
    model,
    path: str | os.PathLike[str],
    preprocess: dict[str, Any] | None = None,
    labels: list[str] | None = None,
) -> Path:
    """Write a vitexport checkpoint (config, weights, preprocessing, labels) atomically."""
    from vitexport import __version__

    meta = getattr(model, "meta", {}) or {}
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vitexport_version": __version__,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "preprocess": preprocess if preprocess is not None else meta.get("preprocess"),
        "labels": list(labels) if labels is not None else meta.get("labels"),
    }
    with atomic_file(path, force=True) as tmp:
        torch.save(payload, tmp)
    return Path(path)


__all__ = ["save_checkpoint"]
