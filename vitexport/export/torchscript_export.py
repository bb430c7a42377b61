"""TorchScript export: ``torch.jit.script`` (shapes stay dynamic), config and metadata as an extra file, the
archive checked against eager PyTorch at a non-native size before it is written.

Scripting and saving are `vitexport.security.torchscript_match`'s (a fresh TorchScript state, so the code depends
on the config, output and torch release alone): `vitexport verify` regenerates an archive's code the same way and
runs it only when the two are identical byte for byte.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import torch

from vitexport._util.errors import ExportError, one_line
from vitexport._util.files import check_output, staged_output
from vitexport.export.artifact import (
    ExportResult,
    artifact_metadata,
    choose_output,
    default_example_size,
    prepared_model,
)
from vitexport.model.vit import count_parameters
from vitexport.onnx.spec import io_spec
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits
from vitexport.security.limits import check as check_limits
from vitexport.security.torchscript_match import save_archive, script_fresh


def _script(prepared: torch.nn.Module) -> torch.jit.ScriptModule:
    try:
        return script_fresh(prepared)
    except Exception as exc:
        raise ExportError(f"torch.jit.script failed: {one_line(exc, kind=True)}") from exc


def _check_scripted(staged: Path, prepared: torch.nn.Module) -> str:
    """The archive must load on its own and reproduce eager PyTorch at a non-native size; the check's line."""
    cfg = prepared.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(staged), map_location="cpu")
    size = default_example_size(prepared) if cfg.dynamic_img_size else cfg.img_hw
    x = torch.randn(2, cfg.in_chans, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (loaded(x) - prepared(x)).abs().max().item()
    if not diff <= 1e-5:
        raise ExportError(f"scripted model differs from eager PyTorch by {diff:.3g} at {size}; nothing written")
    return f"scripted == eager at {size[0]}x{size[1]} (max diff {diff:.2g})"


def export_torchscript(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    source_sha256: str | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
    output: str | None = None,
) -> ExportResult:
    """``torch.jit.script`` the model (shapes stay dynamic); config and metadata travel as an extra file.

    Args:
        model: the PyTorch model of any class (`vitexport.load_model`, `vitexport.create_model`).
        path: the TorchScript archive to write (refused if it exists, unless ``force``).
        force: replace an existing regular file at ``path``.
        source_sha256: the checkpoint's sha256 for the metadata (default: the one the model was loaded with).
        max_tokens: refuse a round-trip check example with more tokens per image (`vitexport.security.limits`).
        max_memory_gb: refuse a check example whose estimated forward pass is larger.
        output: what the module returns: ``logits``, ``features`` or ``tokens`` (as for
            `vitexport.export.onnx_export.export_onnx`); recorded in the metadata.
    """
    output = choose_output(model, output)
    out = check_output(path, force)
    size = default_example_size(model) if model.config.dynamic_img_size else model.config.img_hw
    check_limits(model.config, [(*size, 2)], Limits(max_tokens, max_memory_gb), "torchscript export (its check)")
    start = time.perf_counter()
    cfg = model.config
    spec = io_spec(output, cfg.global_pool, dynamic_size=cfg.dynamic_img_size)
    with staged_output(out, force) as stage, model.producing(output):
        prepared = prepared_model(model, "float32")
        scripted = _script(prepared)  # TorchScript reads the output choice as a constant
        metadata = artifact_metadata(prepared, spec, "float32", None, None, source_sha256)
        archive = save_archive(scripted, json.dumps(metadata))  # in memory, written by Python (see save_archive)
        stage.file.write_bytes(archive)
        del archive
        checked = _check_scripted(stage.file, prepared)
        moved = stage.commit()
    return ExportResult(
        path=out,
        format="torchscript",
        bytes=sum(p.stat().st_size for p in moved),
        seconds=time.perf_counter() - start,
        parameters=count_parameters(model),
        io=spec,
        checks=["torch.jit.load round trip", checked],
        metadata=metadata,
    )


__all__ = ["export_torchscript"]
