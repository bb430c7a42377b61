"""What vitexport's TorchScript exporter writes for a config: the one code path that scripts and saves an archive
(`script_fresh`, `save_archive`, used by `vitexport.export.torchscript_export`), and `regenerated_members`, the
same for a config read from an archive's metadata, which `vitexport.security.torchscript_policy.check_archive`
compares with the archive byte for byte (the positive match).

An archive's code must depend on its config, output and torch release alone. TorchScript names a class
``__torch__.<module>.___torch_mangle_N.<class>`` when the process already holds another type of that name (N and
which type keeps the plain name depend on what was scripted before), and the code files are named and
cross-referenced by those names; so scripting starts from a fresh TorchScript state (`fresh_jit_state`), as in a
new interpreter, and the code of a config is the same in any process. Regenerating needs no weights: the model is
made on the ``meta`` device and given uninitialised memory (scripting never reads it, saving copies it).
Torch is imported inside the functions (the security stage is torch-free at module level).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

from vitexport._util.errors import CheckpointError, ConfigError

REGENERATE_SECONDS = 120.0
_JIT_STATE_LOCK = threading.Lock()
_STATE_NAMES = ("_python_cu", "_script_classes", "_name_to_pyclass", "_jit_caching_layer",
                "_jit_function_overload_caching")
_CACHE: dict[str, dict[str, bytes | int]] = {}  # [config, output] -> what the exporter writes, in this process
_CACHE_LOCK = threading.Lock()


_OVERLOADS: dict[str, list[Any]] | None = None  # torch's uncompiled function overloads, as first seen


def _overloads() -> dict[str, list[Any]]:
    """torch's registry of uncompiled function overloads (``torch.nn.functional.interpolate``'s), as it was the
    first time this module saw torch. Compiling an overloaded function empties its entry (its compiled overloads
    then live in the compilation unit that compiled them), so a fresh unit needs the entries back."""
    global _OVERLOADS
    if _OVERLOADS is None:
        import torch._jit_internal as internal

        _OVERLOADS = {name: list(fns) for name, fns in internal._overloaded_fns.items()}
    return _OVERLOADS


if "torch" in sys.modules:  # imported by the exporter after torch: see the registry before anything is scripted
    _overloads()


class _SortedSet(set):  # type: ignore[type-arg]
    """A set that iterates in sorted order: ``torch.jit._recursive`` collects a module's constants in a set and
    declares them in its iteration order, which for strings changes with each process's hash seed."""

    def __iter__(self) -> Iterator[Any]:
        return iter(sorted(set.__iter__(self), key=str))


@contextlib.contextmanager
def fresh_jit_state() -> Iterator[None]:
    """Within the block, ``torch.jit.script`` starts from what a fresh interpreter has: an empty compilation unit,
    type store and function caches, and the uncompiled overloads (`_overloads`); the process's own are restored
    afterwards (one block at a time). A module's constants are declared in sorted order (`_SortedSet`), not in
    the order of the process's string hashes.

    These are torch's private module globals (``torch.jit._state``, ``torch.jit._recursive``); the C++ side reads
    ``torch.jit._state._python_cu`` at each use. A torch release that moves them makes regenerated code differ
    from an export made in a busy process: archives are then refused, never wrongly admitted."""
    import torch
    import torch._jit_internal as internal
    import torch.jit._recursive as recursive
    import torch.jit._state as state

    with _JIT_STATE_LOCK:
        registry, fresh = internal._overloaded_fns, _overloads()
        saved_registry = {name: list(fns) for name, fns in registry.items()}
        registry.update({name: list(fns) for name, fns in fresh.items()})
        saved = {name: getattr(state, name) for name in _STATE_NAMES}
        saved_recursive = recursive._python_cu, recursive.concrete_type_store
        cu = torch._C.CompilationUnit()
        state._python_cu, state._script_classes, state._name_to_pyclass = cu, {}, {}
        state._jit_caching_layer = weakref.WeakKeyDictionary()
        state._jit_function_overload_caching = weakref.WeakKeyDictionary()
        recursive._python_cu, recursive.concrete_type_store = cu, recursive.ConcreteTypeStore()
        recursive.set = _SortedSet  # the module's own name `set`, before the builtin
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(state, name, value)
            recursive._python_cu, recursive.concrete_type_store = saved_recursive
            del recursive.set
            registry.clear()
            registry.update(saved_registry)


def script_fresh(model: Any) -> Any:
    """``torch.jit.script(model)`` in a fresh TorchScript state (`fresh_jit_state`)."""
    import torch

    with warnings.catch_warnings(), fresh_jit_state():  # torch.jit's deprecation notices are not the user's
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(model)


def save_archive(scripted: Any, extra: str | bytes) -> bytes:
    """The archive of a scripted model, in memory, with ``extra`` as its ``extra/vitexport.json``: what
    ``torch.jit.save`` writes to a file object, without its second copy (``save_to_buffer`` is what it calls).

    Serialized in memory, written by the caller: torch.jit.save's C++ writer finishes the zip in a destructor, and
    a failed write there (a full disk, a quota) aborts the process."""
    from vitexport.security.sniff import TORCHSCRIPT_EXTRA_FILE

    return scripted.save_to_buffer(_extra_files={TORCHSCRIPT_EXTRA_FILE: extra})


def members(archive: bytes | Any) -> dict[str, bytes | int]:
    """An archive's members without its folder (``archive``: its bytes or a binary file): each record's bytes, the
    size of each member that depends on the weights (`vitexport.security.torchscript_policy.is_data`)."""
    import zipfile

    from vitexport.security.torchscript_policy import is_data

    out: dict[str, bytes | int] = {}
    with zipfile.ZipFile(io.BytesIO(archive) if isinstance(archive, bytes) else archive) as zf:
        for info in zf.infolist():
            rel = info.filename.split("/", 1)[1]
            out[rel] = info.file_size if is_data(rel) else zf.read(info)
    return out


def _saved_members(scripted: Any) -> dict[str, bytes | int]:
    """`members` of the scripted model's archive, written by torch's file writer to a file that is already
    unlinked (nothing is left behind, and the weights' bytes never sit in memory); in memory where there is no
    ``/proc/self/fd``. The records are the same either way (the archive's folder name differs, and is not
    compared)."""
    import tempfile

    from vitexport.security.sniff import TORCHSCRIPT_EXTRA_FILE

    fd, name = tempfile.mkstemp(prefix="vitexport-regenerate-", suffix=".ts")
    try:
        os.unlink(name)
        proc = f"/proc/self/fd/{fd}"
        if not os.path.exists(proc):
            return members(save_archive(scripted, b"{}"))
        scripted.save(proc, _extra_files={TORCHSCRIPT_EXTRA_FILE: b"{}"})
        with os.fdopen(os.dup(fd), "rb") as fh:
            return members(fh)
    finally:
        os.close(fd)


def _regenerate(config: dict[str, Any], output: str, data_bytes: int) -> dict[str, Any]:
    """What `vitexport.export.torchscript_export.export_torchscript` writes for ``config`` and ``output``, from a
    model without weights; records base64 (the reply of a child is JSON). ``{"parameters": N}`` instead when the
    model needs more than ``data_bytes`` hold."""
    import torch

    from vitexport.model.family_config import config_from_dict
    from vitexport.model.family_models import model_for

    with torch.device("meta"):
        model = model_for(config_from_dict(config))
    count = sum(math.prod(p.shape) for p in model.parameters())
    if 4 * count > data_bytes:
        return {"parameters": count}
    model = model.to_empty(device="cpu").eval()  # float32 and eval: what the exporter's prepared_model gives
    with model.producing(output):
        scripted = script_fresh(model)
    found = _saved_members(scripted)
    del model, scripted
    return {"members": {k: v if isinstance(v, int) else base64.b64encode(v).decode() for k, v in found.items()}}


def regenerated_members(metadata: dict[str, Any], data_bytes: int) -> dict[str, bytes | int]:
    """What vitexport's exporter writes for the config and output in ``metadata`` (a TorchScript archive's), as
    `vitexport.security.torchscript_policy.Regenerate` has it; computed once per config and output in a process.

    The config comes from the file: it is checked (`config_from_dict`), its blocks (two LayerNorms of ``embed_dim``
    each, at least) must fit in the archive's ``data_bytes`` of tensors before a model is built, and the model is
    built (on ``meta``, then its exact parameter count checked the same way), scripted and saved in a child with
    a memory limit (four times the archive's tensors, plus 1 GB) and a timeout (`vitexport.security.isolate.call`)."""
    from vitexport.model.family_config import config_from_dict
    from vitexport.model.names import OUTPUTS
    from vitexport.security import isolate
    from vitexport.security.torchscript_policy import ADVICE

    config, output = metadata.get("config"), metadata.get("output")
    if not isinstance(config, dict) or output not in OUTPUTS:
        raise CheckpointError(f"its metadata has no usable config and output; {ADVICE}")
    try:
        cfg = config_from_dict(config)
        if output == "logits" and cfg.num_classes == 0:
            raise ConfigError("output logits on a model without a head")
        least = 16 * int(getattr(cfg, "depth", 1)) * int(getattr(cfg, "embed_dim", 1))
    except (ConfigError, ValueError, TypeError, OverflowError, RuntimeError) as exc:
        raise CheckpointError(f"its metadata's config is not usable ({str(exc).splitlines()[0][:200]}); "
                              f"{ADVICE}") from exc
    if least > data_bytes:
        raise CheckpointError(f"its metadata's config needs more than {least:,} bytes of weights and the archive "
                              f"holds {data_bytes:,}; {ADVICE}")
    key = json.dumps([config, output, data_bytes], sort_keys=True)
    with _CACHE_LOCK:
        if key not in _CACHE:
            raw = isolate.call(lambda: _regenerate(config, output, data_bytes),
                               "regenerating a TorchScript archive's code", timeout_s=REGENERATE_SECONDS,
                               memory_bytes=4 * data_bytes + 2**30)
            if "parameters" in raw:
                raise CheckpointError(f"its metadata's config has {raw['parameters']:,} parameters and the archive "
                                      f"holds {data_bytes:,} bytes of tensors; {ADVICE}")
            _CACHE[key] = {k: v if isinstance(v, int) else base64.b64decode(v) for k, v in raw["members"].items()}
        return _CACHE[key]


__all__ = ["fresh_jit_state", "members", "regenerated_members", "save_archive", "script_fresh"]
