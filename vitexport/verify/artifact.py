"""The file under test: loaded once (an ONNX graph report, or a TorchScript archive admitted by policy), its
metadata checked, and the static checks of the graph against its declared interface and config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitexport.engines.torchscript import TorchScriptEngine
from vitexport.onnx.graph import GraphReport, check_against_metadata, inspect_graph, load_onnx
from vitexport.onnx.metadata import check_metadata
from vitexport.security.limits import Limits


@dataclass
class Artifact:
    """The file under test: its format, graph report (ONNX), metadata and, for TorchScript, the loaded module."""

    path: str
    format: str
    metadata: dict[str, Any]
    graph: GraphReport | None = None
    torchscript: TorchScriptEngine | None = None


def load_artifact(path: str, provider: str, limits: Limits) -> Artifact:
    """Read ``path`` (ONNX: its structure; TorchScript: loaded in a limited worker, refused unless it is
    vitexport's own code) and check its metadata; a checkpoint here is named with `vitexport onnx`."""
    from vitexport.security.sniff import require

    if require(path, "model").kind == "onnx":
        graph = inspect_graph(load_onnx(path), path)
        check_metadata(graph.metadata, repr(path), next(iter(graph.inputs.values()), None))
        return Artifact(path, "onnx", graph.metadata, graph=graph)
    memory = int((limits.max_bytes or 8e9) + 1e9)  # the sweep's estimate, plus the runtime itself
    engine = TorchScriptEngine(provider, memory_bytes=memory).load(path)  # refused unless our own code
    check_metadata(engine.metadata, repr(path))
    return Artifact(path, "torchscript", engine.metadata, torchscript=engine)


def static_checks(graph: GraphReport, metadata: dict[str, Any], cfg: Any) -> tuple[list[str], list[str]]:
    """(problems, notes) of the graph against its declared interface and the model config."""
    problems = check_against_metadata(graph, metadata, cfg.to_dict())
    notes: list[str] = []
    input_name = metadata.get("input_name") or next(iter(graph.inputs), "")
    in_dims = graph.inputs.get(input_name, [])
    if len(in_dims) == 4 and all(isinstance(d, int) and d > 0 for d in in_dims[2:]):
        notes.append(f"fixed-size graph: it can only run at {in_dims[2]}x{in_dims[3]}")
        if metadata.get("static_size") is None:
            problems.append(
                f"the graph's height/width are fixed at {in_dims[2]}x{in_dims[3]} although the model is dynamic"
            )
    if graph.resample_form == "resize" and graph.resize:
        notes.append(
            "resampling written as one antialiased Resize: right on ONNX Runtime CPU, but OpenVINO 2026.4 "
            "runs it wrongly and TensorRT refuses it; export with --resample portable to run anywhere"
        )
    if graph.opset >= 19 and graph.resize:
        notes.append(
            f"opset {graph.opset}: Resize-{graph.opset} runs on CUDA only in onnxruntime-gpu builds from 2026 on"
        )
    return problems, notes


__all__ = ["Artifact", "load_artifact", "static_checks"]
