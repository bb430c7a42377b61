"""ONNX Runtime-side transformations of an exported graph: offline optimization and dynamic int8.

Both rewrite weights (folded transposes, quantized matrices), so the results no longer carry
every weight under its state_dict name: verify them with ``--checkpoint``. Imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport.checkpoint import atomic_output
from vitexport.errors import ExportError
from vitexport.graph import check_graph, inspect_graph, load_onnx
from vitexport.runtime import PROVIDERS, _ort, probe_provider
from vitexport.spec import META_PREFIX, IOSpec

OPTIMIZE_PROVIDERS = ("cpu", "cuda")


@dataclass
class TransformResult:
    path: Path
    bytes: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def _spec_from_metadata(meta: dict[str, Any]) -> IOSpec:
    axes = meta.get("dynamic_axes") or {}
    name_in, name_out = meta.get("input_name", "pixel_values"), meta.get("output_name", "logits")
    return IOSpec(
        name_in,
        name_out,
        {int(k): v for k, v in axes.get(name_in, {}).items()},
        {int(k): v for k, v in axes.get(name_out, {}).items()},
    )


def _recheck(path: Path, source_meta: dict[str, Any]) -> list[str]:
    """The same interface and Resize/Pad checks as at export time, on the transformed graph."""
    report = inspect_graph(load_onnx(path), str(path))
    cfg = source_meta["config"]
    return check_graph(
        report,
        _spec_from_metadata(source_meta),
        dynamic_size=source_meta.get("static_size") is None and cfg.get("dynamic_img_size", True),
        expect_resize=cfg.get("dynamic_img_size", True),
        expect_pad=cfg.get("dynamic_img_pad", True),
    )


def _set_metadata(path: Path, extra: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({META_PREFIX + k: json.dumps(v) for k, v in extra.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _source_metadata(src: str | os.PathLike[str]) -> dict[str, Any]:
    report = inspect_graph(load_onnx(src), str(src))
    if not report.metadata.get("config"):
        raise ExportError(f"{str(src)!r} was not exported by vitexport (no metadata); export it with `vitexport onnx`")
    return report.metadata


def _chain(provider: str) -> list[str]:
    return list(dict.fromkeys([PROVIDERS[provider], "CPUExecutionProvider"]))


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
        ort.InferenceSession(str(path), providers=_chain(provider))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def optimize_onnx(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], provider: str = "cpu", force: bool = False
) -> TransformResult:
    """Write ONNX Runtime's offline-optimized graph for ``provider`` (level EXTENDED: no hardware-specific layouts)."""
    ort = _ort()
    if provider not in OPTIMIZE_PROVIDERS:
        raise ExportError(f"cannot optimize for {provider!r}; use one of {', '.join(OPTIMIZE_PROVIDERS)}")
    if provider != "cpu":
        usable, reason = probe_provider(provider)
        if not usable:
            from vitexport.errors import EnvironmentProblem

            raise EnvironmentProblem(f"optimizing for {provider} needs it to run here: {reason}")
    meta = _source_metadata(src)
    start = time.perf_counter()
    with atomic_output(dst, force=force, suffix=".onnx") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(src), sess_options=opts, providers=_chain(provider))
        problems = _recheck(tmp, meta)
        if problems:
            raise ExportError("optimized graph failed its checks, nothing written: " + "; ".join(problems))
        _set_metadata(tmp, {"optimized": {"provider": provider, "level": "extended",
                                          "onnxruntime_version": ort.__version__}})
    out = Path(dst)
    return TransformResult(out, out.stat().st_size, time.perf_counter() - start,
                           {"provider": provider, "level": "extended",
                            "nodes_before": sum(inspect_graph(load_onnx(src)).op_counts.values()),
                            "nodes_after": sum(inspect_graph(load_onnx(out)).op_counts.values())})


def quantize_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str], force: bool = False) -> TransformResult:
    """Dynamic int8 quantization of the MatMul weights for the CPU; everything else stays float.

    Resize (the positional-embedding resampling), Pad, the patch-embedding Conv, LayerNorm,
    attention and the head keep float32; the result lists what was quantized and what was not.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = _source_metadata(src)
    if meta.get("dtype") != "float32":
        raise ExportError(f"int8 quantization starts from a float32 export; {str(src)!r} is {meta.get('dtype')}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        folded = Path(folder) / "folded.onnx"
        # fold the Transpose(weight) nodes first, so that every MatMul sees a constant weight
        optimize_onnx(src, folded, provider="cpu", force=True)
        model = onnx.load(str(folded))
        del model.graph.value_info[:]  # ORT's saved shapes can contradict onnx's inference after its fusions
        onnx.save(model, str(folded))
        float_ops = Counter(n.op_type for n in model.graph.node)
        with atomic_output(dst, force=force, suffix=".onnx") as tmp:
            quiet = _QuietQuantizer()
            logging.getLogger().addFilter(quiet)
            try:
                quantize_dynamic(str(folded), str(tmp), op_types_to_quantize=["MatMul"], per_channel=True,
                                 weight_type=QuantType.QInt8,
                                 # contrib ops (fused attention) have no onnx type inference: their outputs are float
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            finally:
                logging.getLogger().removeFilter(quiet)
            quant_ops = Counter(n.op_type for n in onnx.load(str(tmp)).graph.node)
            problems = _recheck(tmp, meta)
            if problems:
                raise ExportError("quantized graph failed its checks, nothing written: " + "; ".join(problems))
            quantized = quant_ops.get("DynamicQuantizeMatMul", 0) + quant_ops.get("MatMulInteger", 0)
            details = {
                "scheme": "dynamic int8, per-channel weights, MatMul only",
                "matmuls_quantized": quantized,
                "matmuls_left_float": quant_ops.get("MatMul", 0),
                "matmuls_before": float_ops.get("MatMul", 0),
                "kept_float": sorted(k for k in ("Resize", "Pad", "Conv", "LayerNormalization", "MultiHeadAttention",
                                                 "Softmax", "Gemm") if quant_ops.get(k)),
            }
            _set_metadata(tmp, {"quantization": details, "dtype": "int8-dynamic"})
    out = Path(dst)
    return TransformResult(out, out.stat().st_size, time.perf_counter() - start, details)
