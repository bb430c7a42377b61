"""vitexport: export dynamic-pad Vision Transformers to ONNX and TorchScript, verify and serve them.

Attributes are imported lazily so that ``vitexport.runtime`` (ONNX Runtime + numpy
only) can be used in images without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ViTConfig": "vitexport.model.config",
    "get_preset": "vitexport.model.config",
    "VisionTransformer": "vitexport.model.vit",
    "create_model": "vitexport.model.vit",
    "resample_abs_pos_embed": "vitexport.model.layers",
    "load_model": "vitexport.checkpoint.load",
    "read_checkpoint": "vitexport.checkpoint.load",
    "save_checkpoint": "vitexport.checkpoint.save",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vitexport' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
