"""vitexport: export dynamic-pad Vision Transformers to ONNX and TorchScript, verify and serve them.

The public API, imported lazily (``import vitexport`` loads none of torch, numpy or onnxruntime; each name
loads its stage on first use, so the torch-free `Predictor` and `bench` run on the serving install)::

    model = vitexport.load_model("model.safetensors")          # checkpoint -> PyTorch (export extra)
    vitexport.export_onnx(model, "model.onnx")                  # dynamic batch, height and width
    report = vitexport.verify("model.onnx")                     # against PyTorch at many sizes; truthy if passed
    predictor = vitexport.Predictor("model.onnx")               # images of any size -> labels (no torch)
    timings = vitexport.bench("model.onnx", provider="all")     # latency per size, batch and engine

Every stage has its own package (docs/design.md); these names are the stable entry points.
"""

from __future__ import annotations

import importlib
from typing import Any

from vitexport._util.lazy import lazy_attributes

__version__ = "0.1.0"

# The model stage names its classes and configs (timm's other dynamic-size ViT classes too) lazily itself.
_MODEL_API = ("ViTConfig", "VisionTransformer", "EvaConfig", "DistilledConfig", "NaFlexConfig", "config_from_dict",
              "Eva", "VisionTransformerDistilled", "NaFlexVit")
_LAZY = {
    **dict.fromkeys(_MODEL_API, "vitexport.model"),
    "export_onnx": "vitexport.export.onnx_export",
    "export_torchscript": "vitexport.export.torchscript_export",
    "Predictor": "vitexport.serving.predictor",
    "bench": "vitexport.serving.bench",
}
_lazy_getattr, __dir__ = lazy_attributes(__name__, {**_LAZY, "verify": ""})


def __getattr__(name: str) -> Any:
    if name == "verify":  # the verify stage's package, callable as its `verify` (a submodule import binds it anyway)
        return importlib.import_module("vitexport.verify")
    return _lazy_getattr(name)


# Thin documented entry points to functions of the model and checkpoint stages (imported on call).
def load_model(path: Any, config: Any = None, use_ema: bool = False) -> Any:
    """Build the dynamic-pad ViT from a checkpoint, in eval mode, without executing code from the file.

    Args:
        path: a checkpoint file or folder: a vitexport checkpoint, a timm training checkpoint, a plain state
            dict (.pt, .pth, .pth.tar, .bin), .safetensors, or a hub folder (README, "Loading checkpoints").
        config: timm keyword arguments as a dict, a JSON file of them, or JSON text; default: from the
            checkpoint, its ``arch``, a ``config.json`` beside the weights, or the tensor shapes.
        use_ema: load a timm training checkpoint's EMA weights (an error on a file without them).
    """
    from vitexport.checkpoint import load_model as load

    return load(path, config=config, use_ema=use_ema)


def read_checkpoint(path: Any, config: Any = None, use_ema: bool = False) -> Any:
    """Read any supported checkpoint and resolve its config, without building the model (a ``Checkpoint``:
    config, state dict, format, sha256, preprocessing, labels).

    Args:
        path: a checkpoint file or folder, as for `load_model`.
        config: its config, as for `load_model`.
        use_ema: take a timm training checkpoint's EMA weights.
    """
    from vitexport.checkpoint import read_checkpoint as read

    return read(path, config=config, use_ema=use_ema)


def save_checkpoint(model: Any, path: Any, preprocess: dict[str, Any] | None = None,
                    labels: list[str] | None = None) -> Any:
    """Write a vitexport checkpoint (config, weights, preprocessing, labels) atomically; returns its path.

    Args:
        model: a `VisionTransformer`.
        path: the file to write.
        preprocess: ``{"scale": ..., "mean": [...], "std": [...]}`` for the exported models' metadata.
        labels: class names, in output order.
    """
    from vitexport.checkpoint import save_checkpoint as save

    return save(model, path, preprocess=preprocess, labels=labels)


def get_preset(name: str, **overrides: Any) -> Any:
    """A named architecture's config, of its class: a `ViTConfig`, or an `EvaConfig`, `DistilledConfig`,
    `NaFlexConfig` for timm's eva.py, deit.py (distilled) and naflexvit.py (``vitexport presets`` lists them all).

    Args:
        name: the preset, e.g. ``vit_small_patch16_224`` or ``vit_small_patch16_dinov3``.
        **overrides: config fields to change (timm's ``model_args``), e.g. ``num_classes=10``.
    """
    from vitexport.model.config import get_preset as preset

    return preset(name, **overrides)


def create_model(config: Any = None, pretrained: bool = False, seed: int | None = None, **overrides: Any) -> Any:
    """A model with random weights (eval mode) of any class: `VisionTransformer`, `Eva`,
    `VisionTransformerDistilled` or `NaFlexVit`, as the config or preset says (vitexport downloads no weights:
    ``pretrained=True`` is refused).

    This is vitexport's own function, not timm's ``timm.create_model`` (timm is not needed): the model is
    vitexport's dynamic-pad ViT with timm's parameter names, so it exports, and a timm state dict loads into it.
    To try an architecture before fetching its weights::

        model = vitexport.create_model("vit_base_patch16_siglip_224", pretrained=False, seed=0)
        vitexport.save_checkpoint(model, "siglip.pt")  # then: vitexport onnx siglip.pt

    or, in one command, ``vitexport onnx --preset vit_base_patch16_siglip_224 --random-weights`` (``verify`` and
    ``bench`` take ``--preset NAME --random-weights`` too); ``vitexport presets`` lists the names.

    Args:
        config: a config of any class, a preset name of any class, or a dict of timm keyword arguments (with
            ``architecture`` or ``model_class`` for the other classes; None: a ViT's defaults).
        pretrained: must stay False; load fetched weights with `load_model` instead.
        seed: make the random weights reproducible (the global torch RNG is left as it was).
        **overrides: config fields to change.
    """
    from vitexport.model.vit import create_model as create

    return create(config, pretrained=pretrained, seed=seed, **overrides)


def resample_abs_pos_embed(posemb: Any, new_size: list[int], old_size: list[int], num_prefix_tokens: int = 1,
                           portable: bool = False) -> Any:
    """Resample ``(1, prefix + H_old*W_old, D)`` positional embeddings to a ``new_size`` grid: antialiased
    bicubic (Keys a=-0.5), ``align_corners=False``, in float32; prefix tokens are kept unchanged.

    Args:
        posemb: the embeddings, a torch tensor.
        new_size: the target grid (rows, columns).
        old_size: the grid of ``posemb``.
        num_prefix_tokens: leading rows that are not on the grid (class token, registers).
        portable: compute with elementary ops (as the portable ONNX form) instead of ``F.interpolate``.
    """
    from vitexport.model.layers import resample_abs_pos_embed as resample

    return resample(posemb, new_size, old_size, num_prefix_tokens=num_prefix_tokens, portable=portable)


__all__ = [
    "DistilledConfig",
    "Eva",
    "EvaConfig",
    "NaFlexConfig",
    "NaFlexVit",
    "Predictor",
    "ViTConfig",
    "VisionTransformer",
    "VisionTransformerDistilled",
    "__version__",
    "bench",
    "config_from_dict",
    "create_model",
    "export_onnx",
    "export_torchscript",
    "get_preset",
    "load_model",
    "read_checkpoint",
    "resample_abs_pos_embed",
    "save_checkpoint",
    "verify",
]
