"""Read every supported checkpoint format, and what each one carries besides the weights.

Nothing here executes code from a file: torch files go through `vitexport.security.untrusted.load_torch_file`
(pre-scanned, ``torch.load(weights_only=True)`` tried in a child first), safetensors through ``safetensors``.
Formats: a vitexport checkpoint (config, preprocessing, labels), a timm training checkpoint (``arch``, its
saved ``args``, plain and EMA weights), a plain state dict, safetensors (alone or in a hub folder), a JAX/Flax
``.npz`` (`vitexport.security.safenpz`: float arrays only, no pickles; converted here, see
`vitexport.checkpoint.foreign.big_vision`). Folders of transformers and open_clip resolve to their weights file
(`vitexport.checkpoint.release`, which converts the other release formats).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport._util.errors import CheckpointError, CheckpointPathError, one_line
from vitexport.onnx.metadata import labels_list, preprocess_dict
from vitexport.security.sniff import HUB_WEIGHT_FILES, require, sniff
from vitexport.security.untrusted import load_torch_file

FORMAT_NAME = "vitexport.checkpoint"
FORMAT_VERSION = 1
STATE_DICT_KEYS = ("state_dict", "model", "module")  # module: DeepSpeed saves (BAAI's EVA releases)
EMA_STATE_DICT_KEYS = ("state_dict_ema", "model_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


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
        raise CheckpointPathError(f"checkpoint {str(path)!r} does not exist; check the path")
    if path.is_dir():
        from vitexport.checkpoint.release import folder_weights

        release = folder_weights(path)  # a transformers or open_clip folder: its own weights file
        if release is not None:
            return release
        for name in HUB_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointPathError(
            f"{str(path)!r} is a directory without {' or '.join(HUB_WEIGHT_FILES[:2])}; pass the weights file itself"
        )
    if not path.is_file():
        raise CheckpointPathError(f"{str(path)!r} is not a regular file; pass a checkpoint file")
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


def read_raw(path: str | os.PathLike[str]) -> tuple[Path, str, Any]:
    """(resolved path, format, loaded object) for a checkpoint file, without executing code."""
    file = _resolve_file(Path(path))
    found = sniff(file)
    if found.kind == "safetensors" or (found.kind == "unknown" and file.suffix == ".safetensors"):  # a broken header
        tensors, metadata = _load_safetensors(file)
        return file, "safetensors", {"__safetensors__": tensors, "__metadata__": metadata}
    kind = require(file, "checkpoint", found=found).kind  # another kind of file: named, with the command that takes it
    if kind == "npz":
        from vitexport.security.safenpz import read_npz

        return file, "npz", read_npz(file)
    kind = "torch-zip" if kind == "torch-zip" else "torch-pickle"
    return file, kind, load_torch_file(file, kind)


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
            "expected tensors or one of state_dict, state_dict_ema, model, model_ema, module"
        )
    raise CheckpointError(
        f"{str(path)!r} holds a {type(obj).__name__}, not a state dict; re-save it with torch.save(model.state_dict())"
    )


# ---------------------------------------------------------------------------
# what a file carries besides the weights
# ---------------------------------------------------------------------------
@dataclass
class Contents:
    """What a checkpoint file itself says: weights, format, and config/preprocess/labels when it carries them.

    ``args`` and ``source`` are the model config and where it came from; `vitexport.checkpoint.resolve` fills
    them when the file does not carry a config.
    """

    state_dict: dict[str, torch.Tensor]
    format: str
    args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    preprocess: dict[str, Any] | None = None
    labels: list[str] | None = None
    arch: str | None = None
    train_args: Any = None  # a timm training checkpoint's saved `args` (its --model-kwargs and --gp)
    release: Any = None  # a release format's `Converted` (vitexport.checkpoint.foreign): what the file states


def _vitexport_contents(file: Path, obj: dict[str, Any], use_ema: bool) -> Contents:
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
    return Contents(sd, "vitexport", dict(config), "checkpoint",
                    preprocess_dict(obj.get("preprocess"), where, error=CheckpointError),
                    labels_list(obj.get("labels"), where, error=CheckpointError))


def _npz_contents(file: Path, arrays: dict[str, Any], use_ema: bool) -> Contents:
    from vitexport.checkpoint.foreign.big_vision import convert_big_vision

    if use_ema:
        raise _no_ema(file, "a JAX .npz checkpoint, which holds one set of weights", sorted(arrays))
    converted = convert_big_vision(arrays)
    return Contents(converted.state_dict, converted.format, release=converted)


def contents(file: Path, kind: str, obj: Any, use_ema: bool) -> Contents:
    """The weights (EMA ones with ``use_ema``) and whatever else ``obj``, read from ``file`` by `read_raw`, carries."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT_NAME:
        return _vitexport_contents(file, obj, use_ema)
    if kind == "npz":
        return _npz_contents(file, obj, use_ema)
    if kind == "safetensors":
        sd = clean_state_dict(obj["__safetensors__"])
        if not sd:
            raise CheckpointError(f"{str(file)!r} holds no tensors; it is not a model checkpoint")
        if use_ema:
            raise _no_ema(file, "a safetensors file, which holds one set of weights", sorted(sd))
        return Contents(sd, "safetensors")
    sd, key = extract_state_dict(obj, file, use_ema=use_ema)
    arch = obj.get("arch") if isinstance(obj, dict) and isinstance(obj.get("arch"), str) else None
    fmt = "timm-train" if key != "state_dict" or (isinstance(obj, dict) and "arch" in obj) else "state_dict"
    return Contents(sd, fmt, arch=arch, train_args=obj.get("args") if isinstance(obj, dict) else None)


__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "Contents", "clean_state_dict", "contents", "extract_state_dict", "read_raw",
    "sha256_file",
]
