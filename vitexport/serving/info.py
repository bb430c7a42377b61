"""What `vitexport info` shows, as plain data: a checkpoint's config and geometry, or an exported
artifact's interface and metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitexport._util.errors import UsageError


def describe_file(
    path: str | os.PathLike[str],
    config: Any = None,
    use_ema: bool = False,
    sizes: tuple[tuple[int, int], ...] = (),
) -> dict[str, Any]:
    """Describe an exported .onnx / TorchScript file (`describe_artifact`), else a checkpoint: format, config
    source, parameters, native grid, prefix tokens, and the geometry of each of ``sizes`` (for an exported file:
    from its metadata). ``kind`` says which. ``config`` and ``use_ema`` choose how a checkpoint is read; an
    exported file carries its config, so they are refused there (`UsageError`) rather than ignored.

    Exported files are read without torch and without the onnx package; only a checkpoint needs torch."""
    from vitexport.security.sniff import require

    kind = require(path, "info").kind  # what the file is, from its first bytes
    artifact = describe_artifact(path, kind)
    if artifact is None:
        return describe_checkpoint_file(path, config=config, use_ema=use_ema, sizes=sizes)
    if config is not None or use_ema:
        raise UsageError(f"{str(path)!r} is an exported model, which carries its own config and weights; "
                         "--config and --ema apply to checkpoints: leave them out")
    if sizes:
        artifact["sizes"] = _artifact_sizes(artifact["metadata"], sizes, str(path))
    return artifact


def _artifact_sizes(meta: dict[str, Any], sizes: tuple[tuple[int, int], ...], path: str) -> list[dict[str, Any]]:
    """The geometry of each of ``sizes`` from an exported model's metadata (its config), as for a checkpoint."""
    from vitexport._util.geometry import input_geometry
    from vitexport.model.config import ViTConfig

    if not meta.get("config"):
        raise UsageError(f"{path!r} carries no vitexport config (not exported by vitexport); --size needs it")
    cfg = ViTConfig.from_dict(meta["config"])
    return [input_geometry(h, w, cfg.patch_hw, cfg.dynamic_img_pad, cfg.num_prefix_tokens, cfg.grid_size)
            for h, w in sizes]


def describe_checkpoint_file(
    path: str | os.PathLike[str],
    config: Any = None,
    use_ema: bool = False,
    sizes: tuple[tuple[int, int], ...] = (),
) -> dict[str, Any]:
    """What `info` shows about a checkpoint (needs torch; the weights are checked against the config before
    anything is built, and the model is built on the meta device only to count its parameters)."""
    from vitexport._util.extras import require_extra

    require_extra("export", "`vitexport info` on a checkpoint")
    from vitexport.checkpoint.load import describe_checkpoint, read_checkpoint
    from vitexport.checkpoint.weights import check_fits, meta_model
    from vitexport.model.vit import count_parameters, infer_grid

    ckpt = read_checkpoint(path, config=config, use_ema=use_ema)
    check_fits(ckpt.config, ckpt.state_dict, repr(str(ckpt.path)))  # before anything is built
    model = meta_model(ckpt.config)  # shapes only: info allocates no weights
    cfg = ckpt.config
    info = describe_checkpoint(ckpt)
    info.update(
        kind="checkpoint",
        config=cfg.to_dict(),
        parameters=count_parameters(model),
        patch_size=list(cfg.patch_hw),
        native_grid=list(cfg.grid_size),
        prefix_tokens={"class": int(cfg.class_token), "registers": cfg.reg_tokens, "total": cfg.num_prefix_tokens},
        pos_embed_rows=int(ckpt.state_dict["pos_embed"].shape[1]),
        sizes=[infer_grid(model, h, w) for h, w in sizes],
    )
    return info


def describe_onnx(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Interface, ops, resampling form and metadata of an ONNX file, read by `vitexport.security.onnxwire`
    (no onnx package; weights are skipped, external data is not read); the metadata is checked before use."""
    from vitexport.onnx.graph import inspect_graph, read_structure
    from vitexport.onnx.metadata import check_metadata

    p = Path(path)
    report = inspect_graph(read_structure(p), str(p))
    check_metadata(report.metadata, repr(str(p)), next(iter(report.inputs.values()), None))
    return {
        "kind": "onnx",
        "path": str(p),
        "bytes": p.stat().st_size + sum((p.parent / f).stat().st_size for f in report.external_data),
        "opset": report.opset,
        "inputs": report.inputs,
        "outputs": report.outputs,
        "external_data": report.external_data,
        "op_counts": dict(sorted(report.op_counts.items(), key=lambda kv: -kv[1])),
        "resample": report.resample_form,
        "resize": report.resize,
        "resample_matmuls": report.resample_matmuls,
        "metadata": report.metadata,
    }


def describe_artifact(path: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any] | None:
    """Interface and metadata of an exported .onnx or TorchScript file; None when ``path`` is neither
    (judged by its first bytes, `vitexport.security.sniff`, unless the caller already knows its ``kind``)."""
    from vitexport.onnx.metadata import check_metadata
    from vitexport.security.sniff import sniff
    from vitexport.security.torchscript_policy import read_metadata

    kind = kind or sniff(path).kind
    if kind == "onnx":
        return describe_onnx(path)
    if kind == "torchscript":
        p = Path(path)
        return {"kind": "torchscript", "path": str(p), "bytes": p.stat().st_size,
                "metadata": check_metadata(read_metadata(p), repr(str(p)))}  # never loaded: metadata only
    return None


__all__ = ["describe_artifact", "describe_checkpoint_file", "describe_file", "describe_onnx"]
