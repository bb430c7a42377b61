"""Multi-resolution parity of an exported model against PyTorch.

Running and comparing are separate: `compare` is a pure function returning data;
`verify` runs the sweep and returns a `VerifyReport` (truthy when every case passed).
The PyTorch reference is rebuilt from the config and weights the artifact carries,
or from the original checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitexport._util.errors import (
    LimitError,
    UsageError,
    VerificationError,
    one_line,
)
from vitexport._util.files import refuse_inputs, write_text
from vitexport._util.geometry import grid_size, padded_size, token_count
from vitexport.engines import Engine, load_engines
from vitexport.engines.torchscript import TorchScriptEngine
from vitexport.model.config import ViTConfig
from vitexport.model.vit import VisionTransformer
from vitexport.onnx.graph import (
    GraphReport,
    check_against_metadata,
    check_summary,
    inspect_graph,
    load_onnx,
    model_files,
)
from vitexport.onnx.metadata import check_metadata, transformed_by_ort
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits, estimate
from vitexport.security.limits import check as check_limits
from vitexport.verify.diagnose import diagnose_failures, native_grid
from vitexport.verify.parity import TOLERANCES, Comparison, compare, tolerance_for  # noqa: F401 - re-exported

REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Case:
    height: int
    width: int
    batch: int
    input_kind: str = "random"  # "random" (normal, fixed seed) or "constant"


@dataclass
class CaseResult:
    height: int
    width: int
    batch: int
    input_kind: str
    padded_size: list[int]
    grid: list[int]
    seq_len: int
    provider: str
    passed: bool
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    nonfinite: bool = False
    runtime_ms: float | None = None
    torch_ms: float | None = None
    error: str | None = None


@dataclass
class VerifyReport:
    """The whole verification: static checks, providers really used, every case; truthy when all passed."""

    model: str
    format: str
    reference: str
    dtype: str
    atol: float
    rtol: float
    seed: int
    static_problems: list[str] = field(default_factory=list)
    static_notes: list[str] = field(default_factory=list)
    static_checks: list[str] = field(default_factory=list)  # what the static checks verified (resampling, Pad)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    cross_provider: list[dict[str, Any]] = field(default_factory=list)
    weight_diff: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    skipped_providers: list[str] = field(default_factory=list)
    skipped_cases: list[str] = field(default_factory=list)  # default-sweep sizes over max_tokens
    diagnoses: list[str] = field(default_factory=list)  # likely causes of failed cases, per engine
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            not self.static_problems
            and bool(self.cases)
            and all(c.passed for c in self.cases)
            and all(x["passed"] for x in self.cross_provider)
        )

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema_version"] = REPORT_SCHEMA_VERSION
        data["passed"] = self.passed
        return data

    def write_json(self, path: str | Path, force: bool = False) -> Path:
        """Write `to_json` atomically (schema: docs/verify-report.md)."""
        return write_text(path, json.dumps(self.to_json(), indent=2, default=str), force=force)


# ---------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------
def default_sizes(config: ViTConfig) -> list[tuple[int, int]]:
    """Sizes derived from the model: native, (not) divisible, non-square, < one patch, grids down and up to 4x."""
    (h, w), (ph, pw) = config.img_hw, config.patch_hw
    gh, gw = config.grid_size
    sizes = [
        (h, w),  # native
        (gh * ph, gw * pw),  # the native grid itself: resampling is the identity
        (ph * max(1, gh // 2), pw * (gw + 1)),  # divisible, non-square: fewer rows, more columns
        (h + 1, w + max(1, pw // 2) + 1),  # not divisible either way
        (h, w + 3),  # divisible one way (when native is), not the other
        (2 * h + 3, max(1, w // 2) + 1),  # tall
        (max(1, h // 2) + 3, 2 * w - 1),  # wide
        (1, 1),
        (max(1, ph - 1), max(1, pw - 1)),  # smaller than one patch
        (max(1, ph - 1), 2 * pw + 1),
        (ph * max(1, gh // 2), pw * max(1, gw // 2)),  # grid smaller than native: downsampled embeddings
        (2 * h, 2 * w),  # grid larger: upsampled
        (h, 4 * w),  # up to 4x native
        (4 * h, max(1, w // 2)),
    ]
    out: list[tuple[int, int]] = []
    for s in sizes:
        if s not in out:
            out.append(s)
    return out


def accepted_sizes(config: ViTConfig, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sizes a model accepts: only its own without dynamic_img_size; patch multiples without padding."""
    if not config.dynamic_img_size:
        return [config.img_hw]
    if config.dynamic_img_pad:
        return sizes
    rounded = [padded_size(h, w, config.patch_hw) for h, w in sizes]
    return list(dict.fromkeys(rounded))


def default_cases(config: ViTConfig, batch_sizes: tuple[int, ...] = (1, 3)) -> list[Case]:
    sizes = accepted_sizes(config, default_sizes(config))
    largest = max(sizes, key=lambda s: s[0] * s[1])
    cases = []
    for h, w in sizes:
        for b in batch_sizes:
            if (h, w) == largest and b > 1:
                continue  # the 4x cases are costly; batch 1 there
            cases.append(Case(h, w, b))
    (nh, nw) = accepted_sizes(config, [config.img_hw])[0]
    cases.append(Case(nh, nw, 1, "constant"))
    other = accepted_sizes(config, [(nh + 1, nw + 3)])[0]
    if other != (nh, nw):
        cases.append(Case(*other, 2, "constant"))
    return cases


def cases_for(sizes: list[tuple[int, int]], batch_sizes: tuple[int, ...]) -> list[Case]:
    return [Case(h, w, b) for h, w in sizes for b in batch_sizes]


def make_input(case: Case, channels: int, seed: int) -> np.ndarray:
    if case.input_kind == "constant":
        return np.full((case.batch, channels, case.height, case.width), 0.5, dtype=np.float32)
    rng = np.random.default_rng([seed, case.height, case.width, case.batch])
    return rng.standard_normal((case.batch, channels, case.height, case.width)).astype(np.float32)


def heatmap_sizes(native: tuple[int, int], patch: tuple[int, int], steps: int = 8) -> tuple[list[int], list[int]]:
    """Heights and widths for `heatmap_sweep`: 1 to 4x native, including non-multiples of the patch."""

    def axis(n: int, p: int) -> list[int]:
        values = {1, max(1, p - 1), n, n + 1, 4 * n}
        values.update(max(1, round(4 * n * i / (steps - 1))) for i in range(steps))
        return sorted(values)[: steps + 3]

    return axis(native[0], patch[0]), axis(native[1], patch[1])


# ---------------------------------------------------------------------------
# references and engines
# ---------------------------------------------------------------------------
def _model_from(config: dict[str, Any], state_dict: dict[str, torch.Tensor], where: str) -> VisionTransformer:
    """The reference model from an artifact's config and its weights (an artifact also holds other tensors,
    e.g. ONNX shape constants): the config's keys, checked before anything is allocated, in float32."""
    from vitexport.checkpoint.weights import build_model, check_count, check_tensors, expected_shapes

    cfg = ViTConfig.from_dict(config)
    check_count(cfg, state_dict, where)  # a config far larger than the file is refused before keys are listed
    keys = expected_shapes(cfg)
    sd = {k: v for k, v in state_dict.items() if k in keys}
    check_tensors(sd, where)
    return build_model(cfg, {k: v.float() for k, v in sd.items()}, where)


def reference_from_onnx(path: str, metadata: dict[str, Any]) -> VisionTransformer:
    """The PyTorch model rebuilt from the ONNX file's embedded config and its initializers (by state_dict name)."""
    from onnx import numpy_helper

    if not metadata.get("config"):
        raise VerificationError(
            f"{path!r} carries no vitexport config (not exported by vitexport); pass --checkpoint and --config"
        )
    transformed = transformed_by_ort(metadata)
    if transformed:
        raise UsageError(
            f"{path!r} was {transformed} by ONNX Runtime, so its weights are no longer stored under their "
            "PyTorch names; verify it against the original: --checkpoint CHECKPOINT, or --checkpoint with the "
            "float .onnx it was made from"
        )
    proto = load_onnx(path, load_external_data=True)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    return _model_from(metadata["config"], weights, f"the weights inside {path!r}")


def reference_from_torchscript(state_dict: dict[str, Any], metadata: dict[str, Any], path: str):
    """The PyTorch model rebuilt from a TorchScript archive's config and weights (numpy arrays or tensors)."""
    weights = {k: torch.as_tensor(v) for k, v in state_dict.items()}
    return _model_from(metadata["config"], weights, f"the weights inside {path!r}")


def weight_difference(artifact: VisionTransformer, reference: VisionTransformer) -> dict[str, float]:
    """Largest absolute difference per tensor between the artifact's weights and the checkpoint's (non-zero only)."""
    ref = reference.state_dict()
    out = {}
    for k, v in artifact.state_dict().items():
        if k in ref and v.shape == ref[k].shape:
            d = (v.float() - ref[k].float()).abs().max().item()
            if d > 0:
                out[k] = d
    return out


def _time_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1e3


# ---------------------------------------------------------------------------
# the phases of verify()
# ---------------------------------------------------------------------------
@dataclass
class _Artifact:
    """The file under test: its format, graph report (ONNX), metadata and, for TorchScript, the loaded module."""

    path: str
    format: str
    metadata: dict[str, Any]
    graph: GraphReport | None = None
    torchscript: TorchScriptEngine | None = None


def _load_artifact(path: str, provider: str, limits: Limits) -> _Artifact:
    from vitexport.security.sniff import require

    if require(path, "model").kind == "onnx":  # a checkpoint here names `vitexport onnx`
        graph = inspect_graph(load_onnx(path), path)
        check_metadata(graph.metadata, repr(path), next(iter(graph.inputs.values()), None))
        return _Artifact(path, "onnx", graph.metadata, graph=graph)
    memory = int((limits.max_bytes or 8e9) + 1e9)  # the sweep's estimate, plus the runtime itself
    engine = TorchScriptEngine(provider, memory_bytes=memory).load(path)  # refused unless our own code
    check_metadata(engine.metadata, repr(path))
    return _Artifact(path, "torchscript", engine.metadata, torchscript=engine)


def _new_report(artifact: _Artifact, checkpoint: Any, atol: float | None, rtol: float | None,
                seed: int) -> VerifyReport:
    dtype = artifact.metadata.get("dtype", "float32")
    d_atol, d_rtol = tolerance_for(dtype)
    return VerifyReport(
        model=artifact.path, format=artifact.format,
        reference=f"checkpoint {str(checkpoint)!r}" if checkpoint is not None else "weights inside the artifact",
        dtype=dtype, atol=d_atol if atol is None else atol, rtol=d_rtol if rtol is None else rtol, seed=seed,
    )


def _static_checks(graph: GraphReport, metadata: dict[str, Any], cfg: ViTConfig) -> tuple[list[str], list[str]]:
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


def _reference_model(path: str, config: Any) -> VisionTransformer:
    """``--checkpoint``: the original checkpoint, or the float ONNX export a transformed (int8, optimized)
    model came from (its weights are stored under their PyTorch names)."""
    from vitexport.security.sniff import require

    if require(path, "reference").kind == "onnx":
        from vitexport.onnx.graph import read_metadata

        return reference_from_onnx(path, read_metadata(path))
    from vitexport.checkpoint.reader import load_model

    return load_model(path, config=config)


def _references(artifact: _Artifact, checkpoint: Any, config: Any) -> tuple[VisionTransformer, dict | None]:
    """The PyTorch reference (the checkpoint's, else the artifact's own weights) and, with both, their weight diff."""
    reference = None
    if checkpoint is not None:
        reference = _reference_model(str(checkpoint), config)
    meta = artifact.metadata
    if artifact.torchscript is not None:
        own = reference_from_torchscript(artifact.torchscript.state_dict(), meta, artifact.path)
    elif meta.get("config") and not (reference is not None and transformed_by_ort(meta)):
        own = reference_from_onnx(artifact.path, meta)
    else:
        own = None
    if reference is None:
        if own is None:
            raise VerificationError(f"{artifact.path!r} carries no vitexport config; pass --checkpoint (and --config)")
        return own, None
    return reference, weight_difference(own, reference) if own is not None else None


def _case_list(cfg: ViTConfig, sizes: list[tuple[int, int]] | None, batch_sizes: tuple[int, ...],
               fixed_batch: int | None) -> list[Case]:
    case_list = default_cases(cfg, batch_sizes) if sizes is None else cases_for(sizes, batch_sizes)
    if fixed_batch:  # a fixed-batch export runs every case at its batch
        case_list = list(dict.fromkeys(Case(c.height, c.width, fixed_batch, c.input_kind) for c in case_list))
    return case_list


def _within_limits(case_list: list[Case], cfg: ViTConfig, limits: Limits,
                   skip_large: bool, attention: str | None = None) -> tuple[list[Case], list[str]]:
    """The cases to run and those skipped. With ``skip_large`` (the default sweep, the heatmap) sizes over
    the token limit are dropped and listed; everything left must be within both limits, or nothing runs.
    ``attention``: the artifact's attention form (its memory, `vitexport.security.limits.estimate`)."""
    skipped: list[str] = []
    if skip_large and limits.max_tokens is not None:
        kept = []
        for c in case_list:
            est = estimate(cfg, c.height, c.width, c.batch)
            if est.tokens > limits.max_tokens:
                skipped.append(f"{c.height}x{c.width} b{c.batch}: {est.tokens:,} tokens, over --max-tokens "
                               f"{limits.max_tokens:,}")
            else:
                kept.append(c)
        if not kept:
            raise LimitError(f"every size of the sweep is over the token limit ({skipped[0]}); raise --max-tokens")
        case_list = kept
    check_limits(cfg, [(c.height, c.width, c.batch) for c in case_list], limits, "verify", attention)
    return case_list, skipped


def _engines(artifact: _Artifact, request: str, debug: bool, probe: np.ndarray,
             report: VerifyReport) -> list[Engine]:
    """Load the engines to compare; their report entries (with placement diagnostics and the runtime's
    known issues with this model) go into ``report``."""
    if artifact.torchscript is not None:
        report.sessions.append(artifact.torchscript.describe())
        return [artifact.torchscript]
    # the engines and the PyTorch reference alternate case by case: spinning ONNX Runtime worker threads would
    # take the cores from the reference run that follows (as in bench --compare-torch)
    loaded, report.skipped_providers = load_engines(artifact.path, request, debug=debug, spin=False)
    for engine, notes in loaded:
        engine.diagnose(probe)
        entry = engine.describe() | {"requested": request}
        entry["warnings"] = [*notes, *engine.known_issues(artifact.metadata), *entry.get("warnings", [])]
        report.sessions.append(entry)
    return [engine for engine, _ in loaded]


def reduced_cases(cfg: ViTConfig, cases: list[Case]) -> list[Case]:
    """The cheap part of a sweep, for slow engines: batch-1 random inputs at most 1.5x the native size's
    patches (native, non-square, not divisible, < one patch, grids down and up), and the smallest batched case."""
    native = accepted_sizes(cfg, [cfg.img_hw])[0]
    limit = 1.5 * token_count(*native, cfg.patch_hw, pad=cfg.dynamic_img_pad)

    def tokens(c: Case) -> int:
        return token_count(c.height, c.width, cfg.patch_hw, pad=cfg.dynamic_img_pad)

    small = [c for c in cases if c.input_kind == "random" and tokens(c) <= limit]
    single = min((c.batch for c in small), default=1)
    keep = [c for c in small if c.batch == single]
    batched = [c for c in small if c.batch > single]
    if batched:
        keep.append(min(batched, key=lambda c: (tokens(c) * c.batch, c.height, c.width)))
    return [c for c in cases if c in keep]


def _plans(engines: list[Engine], case_list: list[Case], cfg: ViTConfig, explicit_sizes: bool,
           report: VerifyReport) -> dict[str, list[Case]]:
    """The cases each engine runs: all of them, or a reduced default sweep for slow engines (noted in the report)."""
    plans: dict[str, list[Case]] = {}
    for engine, entry in zip(engines, report.sessions, strict=True):
        plans[engine.name] = case_list
        if engine.reduced_sweep and not explicit_sizes:
            plans[engine.name] = reduced_cases(cfg, case_list) or case_list[:1]
            entry["notes"] = [*entry.get("notes", []), f"reduced sweep: {len(plans[engine.name])} of "
                              f"{len(case_list)} cases (batch-1 random inputs up to 1.5x the native size's patches, "
                              f"one batched case), because {engine.reduced_sweep}; pass --sizes to choose the cases"]
    return plans


def _run_reference(reference: VisionTransformer, x: np.ndarray) -> tuple[np.ndarray | None, float | None, str]:
    """(output, ms, error): the PyTorch reference on ``x``; an error when the model refuses that size."""
    try:
        with torch.no_grad():
            out, ms = _time_call(lambda: reference(torch.from_numpy(x)).numpy())
        return out, ms, ""
    except Exception as exc:  # the model itself does not accept this size (a static or unpadded model)
        return None, None, f"PyTorch rejects {x.shape[2]}x{x.shape[3]}: {one_line(exc, 160)}"


def _geometry(case: Case, cfg: ViTConfig) -> dict[str, Any]:
    pad = cfg.dynamic_img_pad
    gh, gw = grid_size(case.height, case.width, cfg.patch_hw, pad)
    return dict(padded_size=list(padded_size(case.height, case.width, cfg.patch_hw, pad)), grid=[gh, gw],
                seq_len=gh * gw + cfg.num_prefix_tokens)


def _run_case(engine: Engine, x: np.ndarray, ref: np.ndarray, result: CaseResult, atol: float, rtol: float,
              top1: bool) -> np.ndarray | None:
    """Run one engine on one case and fill ``result``; the output, or None when the engine refused the input."""
    try:
        out, result.runtime_ms = _time_call(lambda: engine.run(x))
        comp = compare(out, ref, atol, rtol, top1)
    except VerificationError as exc:
        result.error = str(exc)
        return None
    except Exception as exc:  # the runtime refused this input: that is a failed case, not a crash
        result.error = one_line(exc, 200, kind=True)
        return None
    for key in ("max_abs", "mean_abs", "max_rel", "cosine", "top1_agreement", "nonfinite"):
        setattr(result, key, getattr(comp, key))
    result.passed = comp.within_tolerance
    return out


def _sweep(case_list: list[Case], cfg: ViTConfig, reference: VisionTransformer, engines: list[Engine],
           plans: dict[str, list[Case]], report: VerifyReport,
           progress: Callable[[CaseResult, int, int], None] | None) -> dict:
    """Every case through the reference and the engines whose plan holds it; results go into ``report``,
    outputs are returned."""
    total = sum(len(plans[e.name]) for e in engines)
    outputs: dict[tuple[Case, str], np.ndarray] = {}
    for case in case_list:
        runners = [e for e in engines if case in plans[e.name]]
        if not runners:
            continue
        x = make_input(case, cfg.in_chans, report.seed)
        ref, torch_ms, ref_error = _run_reference(reference, x)
        for engine in runners:
            result = CaseResult(case.height, case.width, case.batch, case.input_kind, provider=engine.name,
                                passed=False, torch_ms=torch_ms, **_geometry(case, cfg))
            if ref is None:
                result.error = ref_error
            else:
                out = _run_case(engine, x, ref, result, report.atol, report.rtol, cfg.num_classes > 0)
                if out is not None:
                    outputs[(case, engine.name)] = out
            report.cases.append(result)
            if progress is not None:
                progress(result, len(report.cases), total)
    return outputs


def _cross_compare(case_list: list[Case], names: list[str], outputs: dict, report: VerifyReport,
                   top1: bool) -> None:
    """With several engines: each one's outputs against the first one's, per case."""
    for case in case_list:
        for other in names[1:]:
            a, b = outputs.get((case, names[0])), outputs.get((case, other))
            if a is None or b is None:
                continue
            comp = compare(b, a, report.atol, report.rtol, top1)
            report.cross_provider.append({"height": case.height, "width": case.width, "batch": case.batch,
                                          "providers": [names[0], other], "max_abs": comp.max_abs,
                                          "passed": comp.within_tolerance})


def verify(
    model_path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: Any = None,
    provider: str = "auto",
    sizes: list[tuple[int, int]] | None = None,
    batch_sizes: tuple[int, ...] = (1, 3),
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    progress: Callable[[CaseResult, int, int], None] | None = None,
    debug: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
    skip_over_token_limit: bool = False,
    outputs: tuple[str | Path | None, ...] = (),
) -> VerifyReport:
    """Run an exported model (ONNX or TorchScript) against PyTorch over a sweep of sizes and batches.

    Every case is checked against ``max_tokens`` and ``max_memory_gb`` (`vitexport.security.limits`) before
    anything runs: a request over them is a `LimitError` naming the costliest case. Sizes of the
    default sweep (``sizes=None``) over the token limit are skipped and listed in the report instead,
    as are those of explicit ``sizes`` with ``skip_over_token_limit``. ``outputs`` are the files the
    caller will write afterwards (a report, a plot): one that is an input (the model, its external
    data, the checkpoint) is refused before the sweep.
    """
    limits = Limits(max_tokens, max_memory_gb)
    _check_tolerances(atol, rtol, seed)
    start = time.perf_counter()
    artifact = _load_artifact(str(model_path), provider, limits)
    try:
        files = model_files(model_path, artifact.graph) if artifact.graph else (model_path,)
        for out in outputs:
            if out is not None:
                refuse_inputs(out, (*files, checkpoint, config if isinstance(config, str) else None))
        return _verify_artifact(artifact, start, checkpoint=checkpoint, config=config, provider=provider,
                                sizes=sizes, batch_sizes=batch_sizes, atol=atol, rtol=rtol, seed=seed,
                                progress=progress, debug=debug, limits=limits,
                                skip_large=sizes is None or skip_over_token_limit)
    finally:
        if artifact.torchscript is not None:
            artifact.torchscript.close()


def _check_tolerances(atol: float | None, rtol: float | None, seed: int) -> None:
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, got {value}; pass --{name} 1e-4, for example")
    if not 0 <= seed < 2**63:
        raise UsageError(f"seed must be a non-negative integer below 2**63, got {seed}; pass --seed 0, for example")


def _verify_artifact(artifact: _Artifact, start: float, *, checkpoint: Any, config: Any, provider: str,
                     sizes: list[tuple[int, int]] | None, batch_sizes: tuple[int, ...], atol: float | None,
                     rtol: float | None, seed: int, progress: Any, debug: bool, limits: Limits,
                     skip_large: bool) -> VerifyReport:
    """The phases of `verify` once the artifact is loaded."""
    report = _new_report(artifact, checkpoint, atol, rtol, seed)
    declared = ViTConfig.from_dict(artifact.metadata["config"]) if artifact.metadata.get("config") else None
    if declared is not None:  # the work asked for is refused before any model is built
        case_list, report.skipped_cases = _within_limits(
            _case_list(declared, sizes, batch_sizes, artifact.metadata.get("batch_size")), declared, limits,
            skip_large, artifact.metadata.get("attention"))
    reference, report.weight_diff = _references(artifact, checkpoint, config)
    cfg = declared or reference.config
    if declared is None:
        case_list, report.skipped_cases = _within_limits(
            _case_list(cfg, sizes, batch_sizes, artifact.metadata.get("batch_size")), cfg, limits, skip_large,
            artifact.metadata.get("attention"))
    report.config = cfg.to_dict()
    if artifact.graph is not None:
        report.static_problems, report.static_notes = _static_checks(artifact.graph, artifact.metadata, cfg)
        dynamic_size = artifact.metadata.get("static_size") is None and cfg.dynamic_img_size
        report.static_checks = check_summary(artifact.graph, dynamic_size)
    engines = _engines(artifact, provider, debug, make_input(case_list[0], cfg.in_chans, seed), report)
    plans = _plans(engines, case_list, cfg, sizes is not None, report)
    outputs = _sweep(case_list, cfg, reference, engines, plans, report, progress)
    if len(engines) > 1:
        _cross_compare(case_list, [e.name for e in engines], outputs, report, cfg.num_classes > 0)
    report.diagnoses = diagnose_failures(report, artifact.graph, native_grid(artifact.metadata, cfg))
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class HeatmapSweep:
    """A verify report over every (height, width) of ``heights`` x ``widths``, batch 1."""

    heights: list[int]
    widths: list[int]
    report: VerifyReport


def heatmap_sweep(
    model_path: str | Path,
    report: VerifyReport,
    *,
    checkpoint: str | Path | None = None,
    config: Any = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
) -> HeatmapSweep:
    """Verify again over a grid of heights x widths (1 to 4x native), with ``report``'s engine and tolerances."""
    cfg = ViTConfig.from_dict(report.config)
    heights, widths = heatmap_sizes(cfg.img_hw, cfg.patch_hw)
    first = report.sessions[0] if report.sessions else {}
    provider = first.get("name", "auto") if report.format == "onnx" else first.get("requested", "auto")
    grid = verify(model_path, checkpoint=checkpoint, config=config, provider=provider,
                  sizes=[(h, w) for h in heights for w in widths], batch_sizes=(1,), atol=report.atol,
                  rtol=report.rtol, seed=report.seed, max_tokens=max_tokens, max_memory_gb=max_memory_gb,
                  skip_over_token_limit=True)
    return HeatmapSweep(heights, widths, grid)
