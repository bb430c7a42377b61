"""Checkpoints as their authors released them, in the read path (`vitexport.checkpoint.foreign` converts them).

Which reader a checkpoint gets, first match wins:

1. a vitexport checkpoint (its ``format`` marker): read as written, never converted;
2. by kind: a folder with a transformers ``config.json`` or an ``open_clip_config.json`` is read through its
   weights file (`folder_weights`); an ``.npz`` is big_vision's (converted in `formats.contents`);
3. by keys: transformers keys with a transformers ``config.json`` beside the weights (or given as ``--config``),
   ``visual.*`` with an ``open_clip_config.json`` beside them (or as ``--config``), else `detect_format`
   (OpenAI CLIP, open_clip timm towers, DINOv2, DINOv3,
   EVA / EVA-02 and the EVA-02 CLIP tower);
4. otherwise timm's own layout: ``arch``, a hub ``config.json``, shape inference (`vitexport.checkpoint.resolve`).

A converted checkpoint's config is what the file states, completed by ``--config`` (`complete_args`: an
explicit value never overrides the file); ``--ema`` is refused (these files hold one set of weights).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.checkpoint.foreign import clip, hf
from vitexport.checkpoint.foreign.common import Converted, complete_args
from vitexport.checkpoint.foreign.detect import convert_state_dict
from vitexport.checkpoint.formats import Contents
from vitexport.checkpoint.hub import hub_config, is_hub_layout
from vitexport.model.config import load_config_arg

logger = logging.getLogger(__name__)


def _json(path: Path) -> dict[str, Any] | None:
    return load_config_arg(str(path)) if path.is_file() else None


def folder_weights(folder: Path) -> Path | None:
    """The weights file of a transformers or open_clip folder (refused by name when it has none, or sharded
    ones); None for any other folder (timm's hub layout: `formats` looks for its files)."""
    data = _json(folder / "config.json")
    if hf.is_transformers_config(data):
        return hf.weights_file(folder, hf.folder_format(data))
    if (folder / clip.OPEN_CLIP_CONFIG).is_file():
        return clip.open_clip_weights_file(folder)
    return None


def _is_open_clip_config(data: Any) -> bool:
    cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
    return isinstance(cfg, dict) and isinstance(cfg.get("vision_cfg"), dict)


def _own_configs(file: Path, explicit: dict[str, Any] | None
                 ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(transformers config.json, open_clip config, what is left of ``--config``): the format's own config
    files given as ``--config`` win over those beside the weights."""
    transformers = open_clip = None
    if hf.is_transformers_config(explicit):
        transformers, explicit = explicit, None
    elif explicit is not None and _is_open_clip_config(explicit):
        open_clip, explicit = explicit, None
    if transformers is None:
        beside = _json(file.parent / "config.json")
        transformers = beside if hf.is_transformers_config(beside) else None
    if open_clip is None and (file.parent / clip.OPEN_CLIP_CONFIG).is_file():
        open_clip = clip.read_open_clip_config(file.parent / clip.OPEN_CLIP_CONFIG)
    return transformers, open_clip, explicit


def _convert(found: Contents, file: Path, transformers: dict[str, Any] | None,
             open_clip: dict[str, Any] | None) -> Converted | None:
    sd = found.state_dict
    if transformers is not None and hf.is_transformers_keys(sd) and "patch_embed.proj.weight" not in sd:
        return hf.convert_folder(sd, transformers, file.parent)
    if open_clip is not None and any(k.startswith("visual.") for k in sd):
        clip.model_cfg_of(open_clip)  # refuses a config without model_cfg.vision_cfg
        return clip.convert_open_clip(sd, open_clip)
    return convert_state_dict(sd)


def convert_release(found: Contents, file: Path, explicit: dict[str, Any] | None, use_ema: bool
                    ) -> dict[str, Any] | None:
    """Convert ``found`` (read from ``file``, tensors checked) when it is a release format: its state dict,
    format, preprocessing and labels become the converted ones and ``found.release`` the conversion.
    Returns ``--config`` less the format's own config file when one was given there."""
    if found.format == "vitexport":
        return explicit
    transformers, open_clip, rest = _own_configs(file, explicit)
    converted = found.release or _convert(found, file, transformers, open_clip)
    if converted is None:
        if explicit is not None and rest is None:
            raise ConfigError("--config is a transformers or open_clip config, but the weights are not in that "
                              "library's layout; pass timm keyword arguments, or the weights of that model")
        return explicit
    if use_ema:
        raise CheckpointError(f"{str(file)!r} is in the {converted.format} format, which holds one set of weights; "
                              "drop --ema")
    found.release, found.state_dict, found.format = converted, converted.state_dict, converted.format
    found.preprocess, found.labels = converted.preprocess, converted.labels
    found.source = "file+--config" if explicit is not None else ""  # the format's own config given as --config
    for note in converted.notes:
        logger.info("%s: %s", converted.format, note)
    return rest


def release_config(found: Contents, explicit: dict[str, Any] | None, path: str) -> None:
    """``found.args``/``source`` of a converted checkpoint: what the file states, completed by ``--config``
    (timm keyword arguments or a timm hub config.json, whose preprocessing and labels win)."""
    assert found.release is not None
    args = explicit
    if explicit is not None and is_hub_layout(explicit):
        args, preprocess, labels = hub_config(explicit)
        found.preprocess, found.labels = preprocess or found.preprocess, labels or found.labels
    found.args = complete_args(found.release, args, path)
    found.source = "file" if explicit is None and not found.source else "file+--config"


def release_meta(converted: Converted | None) -> dict[str, Any]:
    """What a converted checkpoint's output is (its head, the library call it equals at the native size)."""
    if converted is None:
        return {}
    return {"head": converted.head, "reference": converted.reference}


__all__ = ["convert_release", "folder_weights", "release_config", "release_meta"]
