"""Read every supported checkpoint format safely; resolve the model config.

Nothing here executes code from a file: pickles go through
``torch.load(weights_only=True)`` (tensors, plain containers and an allow-list of
inert data classes), safetensors through ``safetensors``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport._util.errors import CheckpointError, ConfigError, UnsafeCheckpointError, one_line
from vitexport._util.files import atomic_file
from vitexport.checkpoint.hub import hub_config, is_hub_layout
from vitexport.model.config import ViTConfig, load_config_arg, preset_args
from vitexport.onnx.metadata import labels_list, preprocess_dict
from vitexport.security.sniff import HUB_WEIGHT_FILES, require, sniff

logger = logging.getLogger(__name__)

FORMAT_NAME = "vitexport.checkpoint"
FORMAT_VERSION = 1
STATE_DICT_KEYS = ("state_dict", "model")
EMA_STATE_DICT_KEYS = ("state_dict_ema", "model_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Inert data classes that timm's train.py pickles beside the weights (its `args`).
SAFE_GLOBALS: list[Any] = [argparse.Namespace]


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
            },
        }


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# raw file reading
# ---------------------------------------------------------------------------
def _resolve_file(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    if path.is_dir():
        for name in HUB_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{str(path)!r} is a directory without {' or '.join(HUB_WEIGHT_FILES[:2])}; pass the weights file itself"
        )
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is not a regular file; pass a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); re-download or re-save it")
    return path


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({one_line(exc, 160)}); "
            "it may be truncated: re-download it"
        ) from exc
    return tensors, metadata


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError):  # only improves an error message
        return []


def _load_pickle(path: Path, kind: str) -> Any:
    """torch.load, after the pre-scans and a trial in a child process (`vitexport.security.untrusted`)."""
    from vitexport.security.untrusted import load_torch_file

    return load_torch_file(path, kind, lambda: _torch_load(path, kind))


def _torch_load(path: Path, kind: str) -> Any:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=kind == "torch-zip")
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Unsupported global" in message:
            names = (_unsafe_globals(path) if kind == "torch-zip" else []) or re.findall(
                r"GLOBAL ([\w.]+) was not", message
            )
            raise UnsafeCheckpointError(
                f"refused to load {str(path)!r}: its pickle references {', '.join(sorted(set(names)))}, "
                "which would run code on load; re-save only the weights "
                "(torch.save(model.state_dict(), path)) or convert them to safetensors"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", message, re.S)
        raise CheckpointError(
            f"{str(path)!r} is not a plain weights file ({one_line(detail.group(1) if detail else exc, 160)}); "
            "re-save it with torch.save(model.state_dict(), path) or convert it to safetensors"
        ) from exc
    except (EOFError, RuntimeError, ValueError, OSError, IndexError, KeyError) as exc:
        raise CheckpointError(
            f"{str(path)!r} could not be read ({one_line(exc, 160)}); "
            "it is truncated or corrupt: re-download or re-save it"
        ) from exc


def read_raw(path: str | os.PathLike[str]) -> tuple[Path, str, Any]:
    """(resolved path, format, loaded object) for a checkpoint file, without executing code."""
    file = _resolve_file(Path(path))
    found = sniff(file)
    if found.kind == "safetensors" or (found.kind == "unknown" and file.suffix == ".safetensors"):  # a broken header
        tensors, metadata = _load_safetensors(file)
        return file, "safetensors", {"__safetensors__": tensors, "__metadata__": metadata}
    kind = require(file, "checkpoint", found=found).kind  # another kind of file: named, with the command that takes it
    kind = "torch-zip" if kind == "torch-zip" else "torch-pickle"
    return file, kind, _load_pickle(file, kind)


# ---------------------------------------------------------------------------
# state dict extraction
# ---------------------------------------------------------------------------
def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def clean_state_dict(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    return out


def _no_ema(path: Path, what: str, keys: list[str]) -> CheckpointError:
    shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
    return CheckpointError(
        f"{str(path)!r} has no EMA weights: it is {what} (keys: {shown or 'none'}); "
        "drop --ema to load its weights"
    )


def extract_state_dict(obj: Any, path: Path, use_ema: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint object, and which key it came from.

    With ``use_ema`` only the EMA weights (``state_dict_ema``, ``model_ema``) are taken; a
    checkpoint without them is an error naming the keys it has, never the plain weights.
    """
    if _is_tensor_dict(obj):
        if use_ema:
            raise _no_ema(path, "a plain state dict", sorted(obj))
        return clean_state_dict(obj), "state_dict"
    if isinstance(obj, dict):
        keys = EMA_STATE_DICT_KEYS if use_ema else STATE_DICT_KEYS
        for key in keys:
            if _is_tensor_dict(obj.get(key)):
                return clean_state_dict(obj[key]), key
        if use_ema:
            raise _no_ema(path, "a training checkpoint without state_dict_ema or model_ema",
                          sorted(str(k) for k in obj))
        found = ", ".join(sorted(str(k) for k in obj)[:10])
        raise CheckpointError(
            f"{str(path)!r} holds no state dict (keys: {found or 'none'}); "
            "expected tensors or one of state_dict, state_dict_ema, model, model_ema"
        )
    raise CheckpointError(
        f"{str(path)!r} holds a {type(obj).__name__}, not a state dict; re-save it with torch.save(model.state_dict())"
    )


# ---------------------------------------------------------------------------
# config inference from tensor shapes
# ---------------------------------------------------------------------------
def _shape(sd: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if t is not None else None


def infer_config_args(
    sd: dict[str, torch.Tensor], check_layout: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """timm keyword arguments implied by tensor shapes, and notes on what was guessed.

    With ``check_layout``, layouts whose eps/activation the weights do not store are refused
    (`vitexport.checkpoint.layout`); without, only the geometry is to be trusted.
    """
    from vitexport.checkpoint.layout import ambiguous_block_note, assumed_act_note, infer_block_args, refuse_unstored

    notes: list[str] = []
    proj = _shape(sd, "patch_embed.proj.weight")
    if proj is None or len(proj) != 4:
        raise ConfigError(
            "cannot infer the model config: the weights have no patch_embed.proj.weight of a ViT; "
            "pass --config with timm keyword arguments"
        )
    embed_dim, in_chans, ph, pw = proj
    block_ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not block_ids:
        raise ConfigError("cannot infer the model config: no blocks.N.* weights; pass --config")
    args: dict[str, Any] = {
        "embed_dim": embed_dim,
        "in_chans": in_chans,
        "patch_size": ph if ph == pw else (ph, pw),
        "depth": max(block_ids) + 1,
        "class_token": "cls_token" in sd,
        "pre_norm": "norm_pre.weight" in sd,
    }
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    args.update(infer_block_args(shapes, embed_dim))
    notes += [n for n in [ambiguous_block_note(shapes, args["block_fn"])] if n]
    reg = _shape(sd, "reg_token")
    args["reg_tokens"] = reg[1] if reg else 0
    head = _shape(sd, "head.weight")
    args["num_classes"] = head[0] if head else 0
    if "num_heads" not in args:  # stored only with qk-norm or differential attention
        args["num_heads"] = max(1, embed_dim // 64)
        notes.append(f"num_heads is not stored in the weights; assumed embed_dim/64 = {args['num_heads']}")
    args.update(_infer_pooling(sd, args["class_token"], notes))
    pos = _shape(sd, "pos_embed")
    if pos is None:
        raise ConfigError("cannot infer the model config: no pos_embed; pass --config")
    num_prefix = int(args["class_token"]) + args["reg_tokens"]
    candidates = []
    for no_embed_class in (False, True):
        n = pos[1] - (0 if no_embed_class else num_prefix)
        side = math.isqrt(max(n, 0))
        if n > 0 and side * side == n:
            candidates.append((no_embed_class, side))
    if num_prefix == 0:
        candidates = candidates[:1]
    if len(candidates) != 1:
        raise ConfigError(
            f"cannot infer the positional-embedding grid from pos_embed of {pos[1]} rows "
            f"with {num_prefix} prefix tokens (non-square or ambiguous); pass --config with img_size and no_embed_class"
        )
    no_embed_class, side = candidates[0]
    if no_embed_class:
        notes.append("pos_embed has no rows for the prefix tokens: no_embed_class=True, square grid assumed")
    args["no_embed_class"] = no_embed_class
    args["img_size"] = (side * ph, side * pw) if ph != pw else side * ph
    notes.append(f"native grid inferred as {side}x{side} (img_size {side * ph}x{side * pw})")
    if check_layout:
        refuse_unstored(args)
        notes += [n for n in [assumed_act_note(args)] if n]
    return args, notes


def _infer_pooling(sd: dict[str, torch.Tensor], class_token: bool, notes: list[str]) -> dict[str, Any]:
    """Final norm, fc_norm and global_pool from which norms (and pooling head) the weights hold."""
    has_fc_norm = "fc_norm.weight" in sd
    args: dict[str, Any] = {"final_norm": has_fc_norm or "norm.weight" in sd}
    if "attn_pool.latent" in sd:
        args.update(global_pool="map", fc_norm=has_fc_norm)
    elif has_fc_norm:
        args.update(global_pool="avg", fc_norm=True)
        notes.append("global_pool assumed 'avg' (fc_norm present; max/avgmax are not distinguishable by shape)")
    elif class_token:
        args["global_pool"] = "token"
    else:
        args.update(global_pool="avg", fc_norm=False)
    return args


def _merge_shape_facts(base: dict[str, Any], sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A preset's args corrected by what the weights state unambiguously (classes, channels, grid)."""
    merged = dict(base)
    head = _shape(sd, "head.weight")
    merged["num_classes"] = head[0] if head else 0
    proj = _shape(sd, "patch_embed.proj.weight")
    if proj and len(proj) == 4:
        merged["in_chans"] = proj[1]
    try:
        inferred, _ = infer_config_args(sd, check_layout=False)
    except ConfigError:
        return merged
    grid = lambda args: ViTConfig.from_dict({k: args[k] for k in ("img_size", "patch_size") if k in args}).grid_size  # noqa: E731
    # a grid guessed as square (and so perhaps without prefix rows) only replaces one that does not fit
    same_rows = inferred["no_embed_class"] == bool(merged.get("no_embed_class"))
    if grid(merged) != grid(inferred) and same_rows and not _pos_embed_fits(merged, sd):
        merged["img_size"] = inferred["img_size"]
    return merged


def _pos_embed_fits(args: dict[str, Any], sd: dict[str, torch.Tensor]) -> bool:
    pos = _shape(sd, "pos_embed")
    try:
        cfg = ViTConfig.from_dict(args)
    except ConfigError:
        return False
    gh, gw = cfg.grid_size
    return pos is not None and pos[1] == gh * gw + (0 if cfg.no_embed_class else cfg.num_prefix_tokens)


# ---------------------------------------------------------------------------
# config sources
# ---------------------------------------------------------------------------
def _train_model_kwargs(train_args: Any) -> dict[str, Any]:
    """What timm's train.py passed to create_model besides ``arch``: ``--model-kwargs`` and ``--gp``."""
    if not isinstance(train_args, argparse.Namespace):
        return {}
    kwargs = getattr(train_args, "model_kwargs", None)
    out = dict(kwargs) if isinstance(kwargs, dict) else {}
    if isinstance(getattr(train_args, "gp", None), str):
        out["global_pool"] = train_args.gp
    return out


def _config_from_args(args: dict[str, Any], where: str) -> ViTConfig:
    try:
        return ViTConfig.from_dict(args)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@dataclass
class _Contents:
    """What a checkpoint file itself says: weights, format, and config/preprocess/labels when it carries them."""

    state_dict: dict[str, torch.Tensor]
    format: str
    args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    preprocess: dict[str, Any] | None = None
    labels: list[str] | None = None
    arch: str | None = None
    train_args: Any = None  # a timm training checkpoint's saved `args` (its --model-kwargs and --gp)


def _vitexport_contents(file: Path, obj: dict[str, Any], use_ema: bool) -> _Contents:
    version = obj.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{str(file)!r} is a vitexport checkpoint with format_version {version!r}; re-save it")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(file)!r} was written by a newer vitexport (format {version}); upgrade vitexport"
        )
    if use_ema:
        raise _no_ema(file, "a vitexport checkpoint, which holds one set of weights", sorted(str(k) for k in obj))
    sd = obj.get("state_dict")
    if not _is_tensor_dict(sd):
        raise CheckpointError(f"{str(file)!r} is a vitexport checkpoint without weights; re-save it")
    config = obj.get("config") or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(file)!r} is a vitexport checkpoint whose config is not an object; re-save it")
    where = repr(str(file))
    return _Contents(sd, "vitexport", dict(config), "checkpoint",
                     preprocess_dict(obj.get("preprocess"), where, error=CheckpointError),
                     labels_list(obj.get("labels"), where, error=CheckpointError))


def _contents(file: Path, kind: str, obj: Any, use_ema: bool) -> _Contents:
    if isinstance(obj, dict) and obj.get("format") == FORMAT_NAME:
        return _vitexport_contents(file, obj, use_ema)
    if kind == "safetensors":
        sd = clean_state_dict(obj["__safetensors__"])
        if not sd:
            raise CheckpointError(f"{str(file)!r} holds no tensors; it is not a model checkpoint")
        if use_ema:
            raise _no_ema(file, "a safetensors file, which holds one set of weights", sorted(sd))
        return _Contents(sd, "safetensors")
    sd, key = extract_state_dict(obj, file, use_ema=use_ema)
    arch = obj.get("arch") if isinstance(obj, dict) and isinstance(obj.get("arch"), str) else None
    fmt = "timm-train" if key != "state_dict" or (isinstance(obj, dict) and "arch" in obj) else "state_dict"
    return _Contents(sd, fmt, arch=arch, train_args=obj.get("args") if isinstance(obj, dict) else None)


def _resolve_config(found: _Contents, file: Path, explicit: dict[str, Any] | None) -> list[str]:
    """Fill ``found.args``/``source`` (and preprocess/labels) from --config, arch, config.json or the shapes."""
    if explicit is not None:
        if is_hub_layout(explicit):
            found.args, preprocess_hub, labels_hub = hub_config(explicit)
            found.preprocess, found.labels = preprocess_hub or found.preprocess, labels_hub or found.labels
        else:
            found.args = explicit
        found.source = "--config"
    elif found.source:  # the checkpoint carries its config
        pass
    elif found.arch is not None:
        preset = preset_args(found.arch) | _train_model_kwargs(found.train_args) | {"architecture": found.arch}
        found.args, found.source = _merge_shape_facts(preset, found.state_dict), "arch"
    elif (file.parent / "config.json").is_file():
        data = load_config_arg(str(file.parent / "config.json"))
        assert data is not None
        found.args, found.preprocess, found.labels = hub_config(data) if is_hub_layout(data) else (data, None, None)
        found.source = "config.json"
    else:
        found.args, notes = infer_config_args(found.state_dict)
        found.source = "inferred"
        return notes
    return []


def read_checkpoint(
    path: str | os.PathLike[str],
    config: dict[str, Any] | str | os.PathLike[str] | None = None,
    use_ema: bool = False,
) -> Checkpoint:
    """Read any supported checkpoint and resolve its config (see `load_model`).

    ``use_ema`` takes a training checkpoint's EMA weights; on a file without them (a plain
    state dict, safetensors, a vitexport checkpoint) it is an error naming the keys there are.
    """
    from vitexport.checkpoint.weights import check_tensors

    file, kind, obj = read_raw(path)
    explicit = load_config_arg(str(config) if isinstance(config, os.PathLike) else config)
    found = _contents(file, kind, obj, use_ema)
    check_tensors(found.state_dict, repr(str(file)))  # dense floats backed by the file, before any shape is used
    notes = _resolve_config(found, file, explicit)
    for note in notes:
        logger.warning("%s", note)
    cfg = _config_from_args(found.args, f"model config ({found.source})")
    return Checkpoint(
        config=cfg,
        state_dict=found.state_dict,
        path=file,
        format=found.format,
        config_source=found.source,
        sha256=sha256_file(file),
        preprocess=found.preprocess,
        labels=[str(v) for v in found.labels] if found.labels else None,
        extra={"notes": notes},
    )


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """One error listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(title: str, items: list[str]) -> str:
        shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
        return f"{title}: {shown}"

    parts = [
        listing(t, i)
        for t, i in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected))
        if i
    ]
    raise CheckpointError(
        f"weights in {where} do not fit the model config: " + "; ".join(parts)
        + "; pass the right --config (or fix the checkpoint)"
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
    from vitexport.checkpoint.weights import build_model

    ckpt = read_checkpoint(path, config=config, use_ema=use_ema)
    model = build_model(ckpt.config, ckpt.state_dict, repr(str(ckpt.path)))  # checked before it is allocated
    model.meta = ckpt.meta()
    return model


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
    }


__all__ = [
    "Checkpoint",
    "check_state_dict",
    "clean_state_dict",
    "describe_checkpoint",
    "extract_state_dict",
    "infer_config_args",
    "load_model",
    "read_checkpoint",
    "read_raw",
    "save_checkpoint",
    "sha256_file",
]
