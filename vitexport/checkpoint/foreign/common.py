"""What every release-format converter returns, and the checks they share.

A converter maps a checkpoint as its authors released it onto timm's ``VisionTransformer`` layout (the keys
vitexport's model has) and says which timm keyword arguments the file itself states. What the file does not
state is listed in `Converted.unknown`, never guessed: `complete_args` takes it from an explicit config
(``--config``) or refuses by name. Anything a converter cannot map exactly is refused by name
(`CheckpointError`, one line, with the fix).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.model.presets import PRESETS

# What ``model.head`` is after conversion: a classifier (forward gives logits), the tower's projection
# (CLIP: forward gives the projected image embedding), or nothing (forward gives the pooled features).
HEAD_KINDS = ("classifier", "projection", "none")
# Stored facts a preset is matched on when a fix suggests architectures.
_MATCH_KEYS = ("embed_dim", "depth", "patch_size", "class_token", "reg_tokens", "pre_norm", "mlp_layer")
_INDEX_BUFFER = re.compile(r"(^|\.)position_ids$|^(input_resolution|context_length|vocab_size)$")
# EVA's rotary module is shared by every attention: its buffers are saved once per block too, as the same tensor
_ROPE_COPY = re.compile(r"^(.*?)blocks\.\d+\.attn\.rope\.(freqs_cos|freqs_sin)$")


@dataclass
class Converted:
    """A release-format checkpoint in timm's layout, with what the file states about the model."""

    format: str  # e.g. "openai-clip", "open_clip", "dinov2", "big_vision", "transformers-vit"
    state_dict: dict[str, torch.Tensor]
    args: dict[str, Any]  # timm keyword arguments the weights (and the format's own config file) state
    head: str  # one of HEAD_KINDS
    reference: str  # the library call vitexport's forward equals at the native size
    unknown: tuple[str, ...] = ()  # timm arguments the file does not state: an explicit config must give them
    preprocess: dict[str, Any] | None = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    # a config that states every unknown name for the files this format is usually released as, and for which
    # ones ("OpenAI's CLIP weights"): the refusal prints it as a working command; the user confirms it applies
    suggest: dict[str, Any] | None = None
    suggest_for: str = ""


def drop_index_buffers(sd: dict[str, torch.Tensor]) -> list[str]:
    """Remove the integer index buffers release files carry besides the weights (transformers' persistent
    ``*.position_ids`` of older saves, the ``input_resolution``/``context_length``/``vocab_size`` of OpenAI's
    CLIP), and the per-block copies of EVA's shared rotary buffers (``blocks.N.attn.rope.freqs_cos``: one tensor
    under many names, which `check_tensors` would take for crafted views; the model's own ``rope.freqs_cos``
    stays); they hold no weights. The removed names, so that `check_tensors` sees only weights."""
    dropped = [k for k, v in sd.items() if _INDEX_BUFFER.search(k) and isinstance(v, torch.Tensor)
               and not v.is_floating_point() and not v.is_complex() and v.dim() <= 2]
    dropped += [k for k in sd if (m := _ROPE_COPY.match(k)) and f"{m.group(1)}rope.{m.group(2)}" in sd]
    for key in dropped:
        del sd[key]
    return dropped


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A weights file through vitexport's readers (safetensors, or a pickle vetted before ``torch.load``),
    as dense floating-point tensors (``check_tensors``, after `drop_index_buffers`); never ``torch.load`` here."""
    from vitexport.checkpoint import clean_state_dict, extract_state_dict, read_raw
    from vitexport.checkpoint.weights import check_tensors

    file, kind, obj = read_raw(file)
    sd = clean_state_dict(obj["__safetensors__"]) if kind == "safetensors" else extract_state_dict(obj, file)[0]
    drop_index_buffers(sd)
    check_tensors(sd, repr(str(file)))
    return sd


def refuse(fmt: str, problem: str, fix: str) -> CheckpointError:
    """The one-line refusal every converter raises: ``<format>: <problem>; <fix>``."""
    return CheckpointError(f"{fmt} checkpoint: {problem}; {fix}")


def shape(sd: dict[str, Any], key: str) -> tuple[int, ...] | None:
    value = sd.get(key)
    return tuple(value.shape) if value is not None else None


def need(sd: dict[str, Any], key: str, fmt: str, rank: int | None = None) -> Any:
    """``sd[key]``, or a refusal naming the missing (or wrongly shaped) tensor."""
    if key not in sd:
        raise refuse(fmt, f"{key!r} is missing", "the file is incomplete or of another layout: re-save it")
    value = sd[key]
    if rank is not None and len(value.shape) != rank:
        raise refuse(fmt, f"{key!r} has shape {tuple(value.shape)}, expected {rank} dimensions",
                     "the file is of another layout: re-save it")
    return value


def block_count(keys: Iterable[str], pattern: str, fmt: str) -> int:
    """Number of blocks from keys matching ``pattern`` (one group: the index); indices must run 0..N-1."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not found:
        raise refuse(fmt, "it has no transformer blocks", "the file is of another layout: re-save it")
    if found != set(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - found)[:5]
        raise refuse(fmt, f"blocks {missing} are missing (found {len(found)} of {max(found) + 1})",
                     "the file is incomplete: re-download it")
    return len(found)


def square_side(rows: int) -> int | None:
    """The side of a square grid of ``rows`` positions, or None when ``rows`` is not a square."""
    side = math.isqrt(max(rows, 0))
    return side if rows > 0 and side * side == rows else None


def grid_args(rows: int, patch: tuple[int, int], args: dict[str, Any], unknown: list[str]) -> None:
    """``img_size`` from a square positional table of ``rows`` patch positions, else ``img_size`` is unknown."""
    side = square_side(rows)
    if side is None:
        unknown.append("img_size")
        return
    ph, pw = patch
    args["img_size"] = side * ph if ph == pw else (side * ph, side * pw)


def patch_args(weight_shape: tuple[int, ...]) -> dict[str, Any]:
    """``embed_dim``, ``in_chans``, ``patch_size`` from a conv patch embedding's (D, C, ph, pw)."""
    dim, chans, ph, pw = weight_shape
    return {"embed_dim": dim, "in_chans": chans, "patch_size": ph if ph == pw else (ph, pw)}


def patch_pair(patch: Any) -> tuple[int, int]:
    """``patch_size`` as (height, width) (an int is square)."""
    return (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))


def matching_presets(args: dict[str, Any], limit: int | None = 4) -> list[str]:
    """Preset names whose stored facts (width, depth, patch, tokens, layout) equal ``args``'s."""
    keys = [k for k in _MATCH_KEYS if k in args]
    defaults = {"class_token": True, "reg_tokens": 0, "pre_norm": False, "mlp_layer": "mlp"}
    found = [name for name, preset in PRESETS.items()
             if all(_same(preset.get(k, defaults.get(k)), args[k]) for k in keys)]
    return found[:limit]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        pair = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v, v)  # noqa: E731
        return pair(a) == pair(b)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-4)
    return a == b


def _missing_message(converted: Converted, missing: list[str], path: str | None) -> str:
    """The refusal for names the file does not state: a working command when the converter has a suggestion
    covering them, else the presets that match the weights."""
    head = f"{converted.format} checkpoint: {', '.join(missing)} not stored in the file"
    suggest = converted.suggest or {}
    if "architecture" in suggest or (suggest and all(k in suggest for k in missing)):
        option = f"--config '{json.dumps(suggest)}'"
        command = f"run `vitexport onnx {shlex.quote(path)} {option}`" if path else f"add {option}"
        return (f"{head}; for {converted.suggest_for}, {command} (the same --config works for info and verify "
                "--checkpoint)")
    matches = matching_presets(converted.args)
    hint = (" (matching the weights: " + ", ".join(matches) + ")") if matches else ""
    return (f"{head}; pass them with --config '{{\"{missing[0]}\": ...}}' or name the architecture with "
            f"--config '{{\"architecture\": ...}}'{hint}")


def complete_args(converted: Converted, explicit: dict[str, Any] | None = None, path: str | None = None
                  ) -> dict[str, Any]:
    """timm keyword arguments for `ViTConfig.from_dict`: the explicit config, then what the file states.

    Every name in ``converted.unknown`` must come from ``explicit`` (an ``architecture`` states them
    all); otherwise `ConfigError` names them and how to give them (``path``: the checkpoint as the user
    passed it, for a command to copy). An explicit value that contradicts what the file states is
    refused, not overridden.
    """
    explicit = dict(explicit or {})
    named = explicit.get("architecture") or explicit.get("arch")
    missing = [k for k in converted.unknown if k not in explicit and not named]
    if missing:
        raise ConfigError(_missing_message(converted, missing, path))
    conflicts = [f"{k}={explicit[k]!r} (the file has {v!r})" for k, v in converted.args.items()
                 if k in explicit and not _same(explicit[k], v)]
    if conflicts:
        raise ConfigError(f"{converted.format} checkpoint: --config contradicts the file: {', '.join(conflicts)}; "
                          "drop those options")
    return {**explicit, **converted.args}


def read_json(path: Path, fmt: str, fix: str) -> dict[str, Any]:
    """A JSON object of a checkpoint's folder (a config) through the bounded JSON reader; what it refuses is
    refused as a ``fmt`` checkpoint with ``fix``."""
    from vitexport.model.config import load_config_arg

    try:
        data = load_config_arg(str(path))
    except ConfigError as exc:
        raise refuse(fmt, str(exc), fix) from exc
    assert data is not None
    return data


def folder_file(folder: Path, names: tuple[str, ...], fmt: str) -> Path:
    """The first of ``names`` that is a file in ``folder`` (a hub folder's weights); refused by name if none is."""
    file = next((folder / n for n in names if (folder / n).is_file()), None)
    if file is None:
        raise refuse(fmt, f"{str(folder)!r} holds no {' or '.join(names)}", "pass the model's folder")
    return file


__all__ = [
    "HEAD_KINDS", "Converted", "block_count", "complete_args", "drop_index_buffers", "folder_file", "grid_args",
    "matching_presets", "need", "patch_args", "patch_pair", "read_json", "read_weights", "refuse", "shape",
    "square_side",
]
