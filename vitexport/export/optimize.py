"""ONNX Runtime-side transformations of an exported graph: offline optimization and dynamic int8.

Both rewrite weights (folded transposes, quantized matrices), so the results no longer carry
every weight under its state_dict name: verify them with ``--checkpoint``. A source whose
weights live in an external data file (models over 2 GB) gives a result with external data
too (``<output>.data`` beside it); nothing here loads such weights into the model file.
Imports no torch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.errors import EnvironmentProblem, ExportError
from vitexport._util.files import check_output, staged_output
from vitexport._util.interrupt import scratch_folder
from vitexport.engines.ort import _ort, probe_provider, provider_chain
from vitexport.export.defaults import OPTIMIZE_PROVIDERS
from vitexport.onnx.graph import (
    GraphReport,
    check_against_metadata,
    inspect_graph,
    load_onnx,
    model_files,
    set_metadata,
)

EXTERNAL_MIN_BYTES = 1024  # initializers at least this large go to the external data file (onnx's default)


@dataclass
class TransformResult:
    path: Path
    bytes: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    external_data: Path | None = None


def _source(src: str | os.PathLike[str]) -> GraphReport:
    """The source graph's report; it must carry vitexport metadata."""
    report = inspect_graph(load_onnx(src), str(src))
    if not report.metadata.get("config"):
        raise ExportError(f"{str(src)!r} was not exported by vitexport (no metadata); export it with `vitexport onnx`")
    return report


def _checked(path: Path, source: GraphReport, what: str) -> GraphReport:
    """The same interface and Resize/Pad checks as at export time, on the transformed graph."""
    report = inspect_graph(load_onnx(path), str(path))
    problems = check_against_metadata(report, source.metadata)
    if problems:
        raise ExportError(f"{what} graph failed its checks, nothing written: " + "; ".join(problems))
    return report


def _result(moved: list[Path], start: float, details: dict[str, Any]) -> TransformResult:
    out, data = moved[-1], moved[:-1]  # staging commits the data file first, the model last
    return TransformResult(out, sum(p.stat().st_size for p in moved), time.perf_counter() - start, details,
                           data[0] if data else None)


class _QuietQuantizer(logging.Filter):
    """onnxruntime.quantization advises pre-processing through the root logger; we fold first ourselves.

    It also warns for every output of a contrib op (FusedMatMul, MultiHeadAttention) that onnx cannot
    type: ``DefaultTensorType`` (float) answers that.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "pre-processing before quantization" not in message and "Failed to infer data type" not in message


def session_startup_seconds(path: str | os.PathLike[str], provider: str = "cpu", repeats: int = 3) -> float:
    """Median time to create an InferenceSession (what offline optimization saves at startup)."""
    ort = _ort()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ort.InferenceSession(str(path), providers=provider_chain(provider))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _write_optimized(src: str | os.PathLike[str], dst: Path, provider: str, external: bool) -> None:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    if external:  # without these ORT writes every weight into the model file (and fails over 2 GB)
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{dst.name}.data")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                      str(EXTERNAL_MIN_BYTES))
    ort.InferenceSession(str(src), sess_options=opts, providers=provider_chain(provider))


def check_optimize_provider(provider: str) -> None:
    """Refuse, before any slow work, a provider that offline optimization cannot target here."""
    if provider not in OPTIMIZE_PROVIDERS:
        raise ExportError(f"cannot optimize for {provider!r}; use one of {', '.join(OPTIMIZE_PROVIDERS)}")
    if provider != "cpu":
        usable, reason = probe_provider(provider)
        if not usable:
            raise EnvironmentProblem(f"optimizing for {provider} needs it to run here: {reason}")


def optimize_onnx(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], provider: str = "cpu", force: bool = False
) -> TransformResult:
    """Write ONNX Runtime's offline-optimized graph for ``provider`` (level EXTENDED: no hardware-specific layouts)."""
    check_optimize_provider(provider)
    source = _source(src)
    out = check_output(dst, force, inputs=model_files(src, source))
    start = time.perf_counter()
    with staged_output(out, force) as stage:
        _write_optimized(src, stage.file, provider, external=bool(source.external_data))
        optimized = _checked(stage.file, source, "optimized")
        set_metadata(stage.file, {"optimized": {"provider": provider, "level": "extended",
                                                "onnxruntime_version": _ort().__version__}})
        moved = stage.commit()
    return _result(moved, start, {"provider": provider, "level": "extended",
                                  "nodes_before": sum(source.op_counts.values()),
                                  "nodes_after": sum(optimized.op_counts.values())})


def _fold_for_quantization(src: str | os.PathLike[str], folded: Path) -> Counter[str]:
    """Fold the Transpose(weight) nodes first, so that every MatMul sees a constant weight; its op counts."""
    import onnx

    optimize_onnx(src, folded, provider="cpu", force=True)
    model = onnx.load(str(folded), load_external_data=False)
    del model.graph.value_info[:]  # ORT's saved shapes can contradict onnx's inference after its fusions
    onnx.save(model, str(folded))
    return Counter(n.op_type for n in model.graph.node)


def _quantize(folded: Path, dst: Path, external: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(folded), str(dst), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, use_external_data_format=external,
                         # contrib ops (fused attention) have no onnx type inference: their outputs are float
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(quiet)


def _quantization_details(before: Counter[str], after: dict[str, int]) -> dict[str, Any]:
    return {
        "scheme": "dynamic int8, per-channel weights, MatMul only",
        "matmuls_quantized": after.get("DynamicQuantizeMatMul", 0) + after.get("MatMulInteger", 0),
        "matmuls_left_float": after.get("MatMul", 0),
        "matmuls_before": before.get("MatMul", 0),
        "kept_float": sorted(k for k in ("Resize", "Pad", "Conv", "LayerNormalization", "MultiHeadAttention",
                                         "Softmax", "Gemm") if after.get(k)),
    }


def default_quantized_path(src: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    return Path(src).with_suffix(".int8.onnx")


def quantize_onnx(
    src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, force: bool = False
) -> TransformResult:
    """Dynamic int8 quantization of the MatMul weights for the CPU; everything else stays float.

    Resize (the positional-embedding resampling), Pad, the patch-embedding Conv, LayerNorm,
    attention and the head keep float32; the result lists what was quantized and what was not.
    ``dst`` defaults to `default_quantized_path`.
    """
    source = _source(src)
    out = check_output(dst if dst is not None else default_quantized_path(src), force, inputs=model_files(src, source))
    if source.metadata.get("dtype") != "float32":
        raise ExportError(
            f"int8 quantization starts from a float32 export; {str(src)!r} is {source.metadata.get('dtype')}"
        )
    start = time.perf_counter()
    with scratch_folder(f".{out.name}.", out.parent) as folder:
        folded = Path(folder) / "folded.onnx"
        before = _fold_for_quantization(src, folded)
        with staged_output(out, force) as stage:
            _quantize(folded, stage.file, external=bool(source.external_data))
            details = _quantization_details(before, _checked(stage.file, source, "quantized").op_counts)
            set_metadata(stage.file, {"quantization": details, "dtype": "int8-dynamic"})
            moved = stage.commit()
    return _result(moved, start, details)
