"""What `vitexport info` shows, as typed results: a checkpoint's config and geometry (`CheckpointInfo`), or an
exported artifact's interface and metadata (`ArtifactInfo`). Each has ``to_json()`` (`info --json`); the CLI
renders the fields."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.errors import UsageError


@dataclass
class SizeGeometry:
    """What an input of ``input_size`` goes through (`vitexport._util.geometry.input_geometry`)."""

    input_size: list[int]
    padded_size: list[int]
    grid: list[int]
    num_patches: int
    seq_len: int
    resampled_from: list[int]  # the native grid its positional embeddings are resampled from


@dataclass
class PrefixTokens:
    """The tokens before the patches: the class token (0 or 1) and registers."""

    class_token: int
    registers: int
    total: int

    def to_json(self) -> dict[str, int]:
        return {"class": self.class_token, "registers": self.registers, "total": self.total}


@dataclass
class CheckpointInfo:
    """A checkpoint: where its config came from, the model it builds and the geometry of the sizes asked for."""

    path: str
    format: str
    config_source: str
    sha256: str
    config: dict[str, Any]  # the config's ``to_dict`` (any model class)
    parameters: int
    patch_size: list[int]
    native_grid: list[int]
    prefix_tokens: PrefixTokens
    pos_embed_rows: int
    preprocess: dict[str, Any] | None = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    sizes: list[SizeGeometry] = field(default_factory=list)
    kind: str = "checkpoint"
    head: str | None = None  # a release format: its head and the library output it equals at the native size
    reference: str | None = None

    @property
    def img_size(self) -> tuple[int, int]:
        """The native (height, width)."""
        img = self.config["img_size"]
        return (img[0], img[1]) if isinstance(img, (list, tuple)) else (img, img)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "config_source": self.config_source, "sha256": self.sha256,
            "preprocess": self.preprocess, "labels": self.labels, "notes": self.notes, "kind": self.kind,
            "config": self.config, "parameters": self.parameters, "patch_size": self.patch_size,
            "native_grid": self.native_grid, "prefix_tokens": self.prefix_tokens.to_json(),
            "pos_embed_rows": self.pos_embed_rows, "sizes": [asdict(s) for s in self.sizes],
            **({"head": self.head, "reference": self.reference} if self.head else {}),
        }


@dataclass
class OnnxGraphInfo:
    """An ONNX file's interface and ops, read without the onnx package (weights skipped)."""

    opset: int
    inputs: dict[str, list[Any]]  # name -> dims (ints, or names of dynamic axes)
    outputs: dict[str, list[Any]]
    external_data: list[str]  # files beside the model holding its weights
    op_counts: dict[str, int]  # most frequent first
    resample: str  # the positional-embedding resampling form: "portable" or "resize"
    resize: list[dict[str, Any]]
    resample_matmuls: list[dict[str, Any]]

    @property
    def nodes(self) -> int:
        return sum(self.op_counts.values())


@dataclass
class ArtifactInfo:
    """An exported .onnx or TorchScript file: its size on disk, its ONNX interface, its vitexport metadata
    (empty when not exported by vitexport) and the geometry of the sizes asked for (None: none asked)."""

    kind: str  # "onnx" or "torchscript"
    path: str
    bytes: int  # with external data
    metadata: dict[str, Any]
    graph: OnnxGraphInfo | None = None
    sizes: list[SizeGeometry] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "path": self.path, "bytes": self.bytes}
        if self.graph is not None:
            data.update(asdict(self.graph))
        data["metadata"] = self.metadata
        if self.sizes is not None:
            data["sizes"] = [asdict(s) for s in self.sizes]
        return data


def describe_file(
    path: str | os.PathLike[str],
    config: Any = None,
    use_ema: bool = False,
    sizes: tuple[tuple[int, int], ...] = (),
) -> CheckpointInfo | ArtifactInfo:
    """Describe an exported .onnx / TorchScript file (`describe_artifact`), else a checkpoint
    (`describe_checkpoint_file`); ``kind`` says which. Exported files are read without torch and without the
    onnx package; only a checkpoint needs torch.

    Args:
        path: a checkpoint (file or folder), an .onnx file or a TorchScript archive (judged by its first bytes).
        config: a checkpoint's config (a dict, a JSON file or JSON text); refused for an exported file
            (`UsageError`), which carries its own.
        use_ema: read a timm training checkpoint's EMA weights; refused for an exported file.
        sizes: (height, width) sizes whose padding, grid and sequence length to include.
    """
    from vitexport.security.sniff import require

    kind = require(path, "info").kind  # what the file is, from its first bytes
    artifact = describe_artifact(path, kind)
    if artifact is None:
        return describe_checkpoint_file(path, config=config, use_ema=use_ema, sizes=sizes)
    if config is not None or use_ema:
        raise UsageError(f"{str(path)!r} is an exported model, which carries its own config and weights; "
                         "--config and --ema apply to checkpoints: leave them out")
    if sizes:
        artifact.sizes = _artifact_sizes(artifact.metadata, sizes, str(path))
    return artifact


def _artifact_sizes(meta: dict[str, Any], sizes: tuple[tuple[int, int], ...], path: str) -> list[SizeGeometry]:
    """The geometry of each of ``sizes`` from an exported model's metadata (its config), as for a checkpoint."""
    from vitexport._util.geometry import input_geometry
    from vitexport.model.family_config import config_from_dict

    if not meta.get("config"):
        raise UsageError(f"{path!r} carries no vitexport config (not exported by vitexport); --size needs it")
    cfg = config_from_dict(meta["config"])
    return [SizeGeometry(**input_geometry(h, w, cfg.patch_hw, cfg.dynamic_img_pad, cfg.num_prefix_tokens,
                                          cfg.grid_size))
            for h, w in sizes]


def describe_checkpoint_file(
    path: str | os.PathLike[str],
    config: Any = None,
    use_ema: bool = False,
    sizes: tuple[tuple[int, int], ...] = (),
) -> CheckpointInfo:
    """What `info` shows about a checkpoint (needs torch; the weights are checked against the config before
    anything is built, and the model is built on the meta device only to count its parameters).

    Args:
        path: the checkpoint file or folder.
        config: its config, for formats that do not carry one.
        use_ema: read a timm training checkpoint's EMA weights.
        sizes: (height, width) sizes whose geometry to include.
    """
    from vitexport._util.extras import require_extra

    require_extra("export", "`vitexport info` on a checkpoint")
    from vitexport.checkpoint.load import describe_checkpoint, read_checkpoint
    from vitexport.checkpoint.weights import check_fits, meta_model
    from vitexport.model.vit import count_parameters, infer_grid

    ckpt = read_checkpoint(path, config=config, use_ema=use_ema)
    check_fits(ckpt.config, ckpt.state_dict, repr(str(ckpt.path)))  # before anything is built
    model = meta_model(ckpt.config)  # shapes only: info allocates no weights
    cfg = ckpt.config
    source = describe_checkpoint(ckpt)
    return CheckpointInfo(
        path=source["path"], format=source["format"], config_source=source["config_source"], sha256=source["sha256"],
        preprocess=source.get("preprocess"), labels=source.get("labels"), notes=list(source.get("notes") or []),
        config=cfg.to_dict(),
        parameters=count_parameters(model),
        patch_size=list(cfg.patch_hw),
        native_grid=list(cfg.grid_size),
        prefix_tokens=PrefixTokens(int(cfg.class_token), getattr(cfg, "num_reg_tokens", None) or
                                   getattr(cfg, "reg_tokens", 0), cfg.num_prefix_tokens),
        pos_embed_rows=_table_rows(ckpt.state_dict),
        sizes=[SizeGeometry(**infer_grid(model, h, w)) for h, w in sizes],
        head=source.get("head"), reference=source.get("reference"),
    )


def _table_rows(sd: dict[str, Any]) -> int:
    """Rows of the absolute position table: ViT's and Eva's ``pos_embed`` ``(1, rows, D)``, NaFlexViT's grid
    ``(1, h, w, D)`` or its factorized row and column tables; 0 without one (rotary only)."""
    if "pos_embed" in sd:
        return int(sd["pos_embed"].shape[1])
    if "embeds.pos_embed" in sd:
        return int(sd["embeds.pos_embed"].shape[1] * sd["embeds.pos_embed"].shape[2])
    return sum(int(sd[k].shape[1]) for k in ("embeds.pos_embed_y", "embeds.pos_embed_x") if k in sd)


def describe_onnx(path: str | os.PathLike[str]) -> ArtifactInfo:
    """Interface, ops, resampling form and metadata of an ONNX file, read by `vitexport.security.onnxwire`
    (no onnx package; weights are skipped, external data is not read); the metadata is checked before use.

    Args:
        path: the .onnx file.
    """
    from vitexport.onnx.graph import inspect_graph, read_structure
    from vitexport.onnx.metadata import check_metadata

    p = Path(path)
    report = inspect_graph(read_structure(p), str(p))
    check_metadata(report.metadata, repr(str(p)), next(iter(report.inputs.values()), None))
    graph = OnnxGraphInfo(
        opset=report.opset, inputs=report.inputs, outputs=report.outputs, external_data=report.external_data,
        op_counts=dict(sorted(report.op_counts.items(), key=lambda kv: -kv[1])), resample=report.resample_form,
        resize=report.resize, resample_matmuls=report.resample_matmuls,
    )
    size = p.stat().st_size + sum((p.parent / f).stat().st_size for f in report.external_data)
    return ArtifactInfo("onnx", str(p), size, report.metadata, graph=graph)


def describe_artifact(path: str | os.PathLike[str], kind: str | None = None) -> ArtifactInfo | None:
    """Interface and metadata of an exported .onnx or TorchScript file; None when ``path`` is neither.

    Args:
        path: the file.
        kind: what it is, when the caller already knows (else judged by its first bytes, `vitexport.security.sniff`).
    """
    from vitexport.onnx.metadata import check_metadata
    from vitexport.security.sniff import sniff

    kind = kind or sniff(path).kind
    if kind == "onnx":
        return describe_onnx(path)
    if kind == "torchscript":
        from vitexport.security.torchscript_policy import read_metadata

        p = Path(path)
        metadata = check_metadata(read_metadata(p), repr(str(p)))  # never loaded: metadata only
        return ArtifactInfo("torchscript", str(p), p.stat().st_size, metadata)
    return None


__all__ = ["ArtifactInfo", "CheckpointInfo", "OnnxGraphInfo", "PrefixTokens", "SizeGeometry", "describe_artifact",
           "describe_checkpoint_file", "describe_file", "describe_onnx"]
