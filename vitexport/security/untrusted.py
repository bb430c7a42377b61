"""Loading torch files we did not write: bounded, pre-scanned, and unpickled first in a child.

``torch.load(weights_only=True)`` runs no code from a file, but a small file can still crash
it, hang it, or make it allocate gigabytes. `load_torch_file` is the one way vitexport loads a
``.pt``/``.pth``/``.bin`` file:

1. the zip directory (zip format) is checked by `vitexport.security.safezip`, and ``data.pkl`` read with a
   cap; the legacy format's pickles are read from the file in sequence;
2. every pickle torch will unpickle is pre-scanned by `vitexport.security.picklescan` against
   `CHECKPOINT_GLOBALS` (weights, plain containers, timm's ``argparse.Namespace``), and every
   storage it declares must be backed by the file's bytes (a zip member, or the data after the
   pickles);
3. ``torch.load(weights_only=True)`` with the same list (its entries from outside torch given as
   ``safe_globals``: `torch_safe_globals`), its errors mapped to one-line `CheckpointError` and
   `UnsafeCheckpointError`, runs once in a forked child with a memory limit and a timeout
   (`vitexport.security.isolate`): a crash or hang in the unpickler becomes a one-line error. The
   child returns nothing but "done" (its errors keep their class and message); the parent then loads
   the file itself, the same deterministic computation the child just finished within the limits, so
   tensors never cross a process boundary (the zip format is memory-mapped: no copy at all).

torch is imported inside the functions that load: this module stays light.

Measured cost (``benchmarks/untrusted_load_bench.py``) is listed in docs/bad-inputs.md.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError, UnsafeCheckpointError, one_line
from vitexport.security import isolate
from vitexport.security.picklescan import QUANTIZED_STORAGES, STORAGE_BYTES, Storage, scan
from vitexport.security.safezip import open_zip, read_member

logger = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_TENSOR_GLOBALS = {
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.Tensor", "torch.Size",
    "torch.device",
}
_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
           "complex64", "complex128", "float", "double", "half", "long", "int", "short")
_STORAGES = {f"{module}.{name}" for name in STORAGE_BYTES if name not in QUANTIZED_STORAGES
             for module in ("torch", "torch.cuda", "torch.storage")}
# What a weights file may reference: tensors, storages, dtypes, plain containers, and the inert classes
# timm's train.py saves beside the weights. Narrower than torch's own weights-only list (no sets,
# bytearrays, complex numbers, sparse/quantized/nested tensors). The one allowlist: the pre-scan checks
# every pickle against it, and torch.load is given its entries from outside torch (`torch_safe_globals`).
CHECKPOINT_GLOBALS = frozenset(
    _TENSOR_GLOBALS | _STORAGES | {f"torch.{d}" for d in _DTYPES}
    | {"collections.OrderedDict", "argparse.Namespace", "_codecs.encode"}
)
MAX_PICKLE_BYTES = 64_000_000
CHILD_MEMORY_BYTES = 2 * 1024**3  # beyond the file itself


def _check_backing(storages: list[Storage], available: Callable[[str], int], what: str) -> None:
    """Every declared storage must be backed by that many bytes in the file."""
    for s in storages:
        have = available(s.key)
        if have < s.nbytes:
            raise CheckpointError(
                f"{what}: storage {s.key!r} declares {s.numel:,} x {s.type_name} ({s.nbytes / 1e6:,.1f} MB) but "
                f"the file holds {max(have, 0) / 1e6:,.1f} MB for it; the file is truncated, corrupt or crafted: "
                "re-download or re-save it")


def _prescan_zip(path: Path, what: str) -> None:
    with open_zip(path, "checkpoint") as zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            return  # not a torch checkpoint: torch.load says so itself
        prefix = pkl[0][: -len("data.pkl")]
        summary = scan(read_member(zf, pkl[0], what, MAX_PICKLE_BYTES), what, CHECKPOINT_GLOBALS)
        sizes = {n[len(prefix) + 5 :]: zf.getinfo(n).file_size for n in names if n.startswith(prefix + "data/")}
        _check_backing(summary.storages, lambda key: sizes.get(key, -1), what)


def _prescan_legacy(path: Path, what: str) -> None:
    """The legacy format: magic number, protocol, system info, the object, the storage keys; then data."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        first = scan(fh, what, CHECKPOINT_GLOBALS)
        if first.value != LEGACY_MAGIC:
            return  # torch reads only this first pickle, then stops ("invalid magic number")
        storages: list[Storage] = []
        for _ in range(4):
            storages += scan(fh, what, CHECKPOINT_GLOBALS).storages
        data_bytes = size - fh.tell()
    unique = {s.key: s for s in storages}
    need = sum(s.nbytes + 8 for s in unique.values())  # each storage is written as its numel, then its bytes
    if need > data_bytes:
        biggest = max(unique.values(), key=lambda s: s.nbytes)
        _check_backing([biggest], lambda key: data_bytes - 8, what)
        raise CheckpointError(f"{what}: its storages declare {need / 1e6:,.1f} MB but the file holds "
                              f"{data_bytes / 1e6:,.1f} MB of data; it is truncated or crafted: re-save it")


def prescan(path: Path, kind: str) -> None:
    """Refuse, before torch reads it, a torch file whose pickles or declared sizes are hostile."""
    what = repr(str(path))
    if kind == "torch-zip":
        _prescan_zip(path, what)
    elif kind == "torch-pickle":
        _prescan_legacy(path, what)


def torch_safe_globals() -> list[Any]:
    """The entries of `CHECKPOINT_GLOBALS` from outside torch, as objects, for ``torch.serialization.safe_globals``
    (torch's weights-only unpickler knows its own tensor, storage and dtype globals)."""
    out = []
    for name in sorted(CHECKPOINT_GLOBALS):
        module, _, attr = name.rpartition(".")
        if module.split(".")[0] != "torch":
            out.append(getattr(importlib.import_module(module), attr))
    return out


def _unsafe_globals(path: Path) -> list[str]:
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError):  # only improves an error message
        return []


def _torch_load(path: Path, kind: str) -> Any:
    """``torch.load(weights_only=True)`` with the allowlist, its errors as one-line `CheckpointError`s (no pre-scan,
    no child: `load_torch_file` is the way to load a file)."""
    import torch

    try:
        with torch.serialization.safe_globals(torch_safe_globals()):
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


def load_torch_file(path: Path, kind: str) -> Any:
    """The object in the torch file ``path`` (``kind``: ``"torch-zip"`` or ``"torch-pickle"``, as sniffed): `prescan`,
    then `_torch_load` once in an isolated child, then in this process (see the module docstring)."""
    prescan(path, kind)
    size = path.stat().st_size

    def trial() -> None:
        _torch_load(path, kind)

    isolate.call(trial, f"reading {str(path)!r}", timeout_s=60 + size / 50e6,
                 memory_bytes=CHILD_MEMORY_BYTES + 2 * size)
    return _torch_load(path, kind)


__all__ = ["CHECKPOINT_GLOBALS", "load_torch_file", "prescan", "torch_safe_globals"]
