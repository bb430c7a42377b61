"""Multi-resolution parity of an exported model against PyTorch.

Running and comparing are separate: `compare` is a pure function returning data;
`verify` runs the sweep and returns a `VerifyReport` (truthy when every case passed).
The PyTorch reference is rebuilt from the config and weights the artifact carries,
or from the original checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitexport.config import ViTConfig
from vitexport.errors import CheckpointError, EnvironmentProblem, VerificationError
from vitexport.graph import check_graph, check_summary, inspect_graph, load_onnx
from vitexport.layers import padded_size
from vitexport.model import VisionTransformer
from vitexport.spec import IOSpec

REPORT_SCHEMA_VERSION = 1
# Defaults from measurements (shared/NUMERICS.md): fp32 graphs differ from eager by ~1e-7 (tiny ViTs)
# to ~5e-6 (ViT-S/16, 4-block digits model); fp16 graphs by ~1e-3 on logits of scale 1-10.
TOLERANCES = {"float32": (2e-5, 1e-4), "float16": (5e-3, 1e-2), "int8-dynamic": (0.1, 5e-2)}
# int8-dynamic: measured max |d| 0.007-0.15 on the digits sample's logits (scale ~10), cosine >= 0.9987.


@dataclass(frozen=True)
class Case:
    height: int
    width: int
    batch: int
    input_kind: str = "random"  # "random" (normal, fixed seed) or "constant"


@dataclass
class Comparison:
    """Differences between two outputs (Polygraphy-style): the caller decides pass or fail."""

    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None
    nonfinite: bool
    within_tolerance: bool


def compare(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float, top1: bool) -> Comparison:
    """Compare ``out`` with ``ref`` elementwise: |out - ref| <= atol + rtol * |ref|; NaN/Inf never pass."""
    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    nonfinite = not (np.isfinite(out64).all() and np.isfinite(ref64).all())
    if out64.shape != ref64.shape:
        raise VerificationError(f"output shape {out64.shape} differs from PyTorch's {ref64.shape}")
    if nonfinite:
        return Comparison(math.inf, math.inf, math.inf, float("nan"), None, True, False)
    diff = np.abs(out64 - ref64)
    rel = diff / np.maximum(np.abs(ref64), atol)  # relative where the reference is not ~0
    a, b = out64.reshape(len(out64), -1), ref64.reshape(len(ref64), -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(1) / np.where(denom > 0, denom, 1), 1.0)
    agreement = float((a.argmax(1) == b.argmax(1)).mean()) if top1 else None
    return Comparison(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        max_rel=float(rel.max()),
        cosine=float(cos.min()),
        top1_agreement=agreement,
        nonfinite=False,
        within_tolerance=bool((diff <= atol + rtol * np.abs(ref64)).all()),
    )


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
    ph, pw = config.patch_hw
    rounded = [(-(-h // ph) * ph, -(-w // pw) * pw) for h, w in sizes]
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


# ---------------------------------------------------------------------------
# references and runners
# ---------------------------------------------------------------------------
def _model_from(config: dict[str, Any], state_dict: dict[str, torch.Tensor], where: str) -> VisionTransformer:
    from vitexport.checkpoint import check_state_dict

    model = VisionTransformer(ViTConfig.from_dict(config))
    sd = {k: v.float() for k, v in state_dict.items() if k in model.state_dict()}
    check_state_dict(model, sd, where)
    model.load_state_dict(sd)
    return model.eval()


def reference_from_onnx(path: str, metadata: dict[str, Any]) -> VisionTransformer:
    """The PyTorch model rebuilt from the ONNX file's embedded config and its initializers (by state_dict name)."""
    from onnx import numpy_helper

    if not metadata.get("config"):
        raise VerificationError(
            f"{path!r} carries no vitexport config (not exported by vitexport); pass --checkpoint and --config"
        )
    transformed = "quantized" if metadata.get("quantization") else "optimized" if metadata.get("optimized") else None
    if transformed:
        raise VerificationError(
            f"{path!r} was {transformed} by ONNX Runtime, so its weights are no longer stored under their "
            "PyTorch names; verify it against the original with --checkpoint"
        )
    proto = load_onnx(path, load_external_data=True)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    return _model_from(metadata["config"], weights, f"the weights inside {path!r}")


def reference_from_torchscript(module: torch.jit.ScriptModule, metadata: dict[str, Any], path: str):
    return _model_from(metadata["config"], dict(module.state_dict()), f"the weights inside {path!r}")


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
) -> VerifyReport:
    """Run an exported model (ONNX or TorchScript) against PyTorch over a sweep of sizes and batches."""
    from vitexport.export import is_torchscript, read_torchscript_metadata

    path = str(model_path)
    start = time.perf_counter()
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"model {path!r} does not exist; pass an exported .onnx or TorchScript file")
    if p.suffix == ".onnx" or (p.is_file() and not is_torchscript(p)):
        fmt = "onnx"
        proto = load_onnx(path)
        graph = inspect_graph(proto, path)
        metadata = graph.metadata
        del proto
    else:
        fmt, graph = "torchscript", None
        metadata = read_torchscript_metadata(path)

    dtype = metadata.get("dtype", "float32")
    d_atol, d_rtol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol

    # the reference
    if checkpoint is not None:
        from vitexport.checkpoint import load_model

        reference = load_model(checkpoint, config=config)
        reference_name = f"checkpoint {str(checkpoint)!r}"
    else:
        reference = None
        reference_name = "weights inside the artifact"
    report = VerifyReport(model=path, format=fmt, reference=reference_name, dtype=dtype, atol=atol, rtol=rtol,
                          seed=seed)

    cfg = ViTConfig.from_dict(metadata["config"]) if metadata.get("config") else (
        reference.config if reference is not None else None
    )
    if cfg is None:
        raise VerificationError(f"{path!r} carries no vitexport config; pass --checkpoint (and --config)")
    report.config = cfg.to_dict()
    static_size = metadata.get("static_size")
    fixed_batch = metadata.get("batch_size")

    # static checks first
    if graph is not None:
        spec = IOSpec(
            metadata.get("input_name", "pixel_values"),
            metadata.get("output_name", "logits"),
            {int(k): v for k, v in (metadata.get("dynamic_axes") or {}).get(
                metadata.get("input_name", "pixel_values"), {"0": "batch", "2": "height", "3": "width"}).items()},
            {int(k): v for k, v in (metadata.get("dynamic_axes") or {}).get(
                metadata.get("output_name", "logits"), {"0": "batch"}).items()},
        )
        dynamic_size = static_size is None and cfg.dynamic_img_size
        report.static_problems = check_graph(
            graph, spec, dynamic_size=dynamic_size, expect_resize=cfg.dynamic_img_size, expect_pad=cfg.dynamic_img_pad
        )
        report.static_checks = check_summary(graph, dynamic_size)
        in_dims = graph.inputs.get(spec.input_name, [])
        if len(in_dims) == 4 and all(isinstance(d, int) and d > 0 for d in in_dims[2:]):
            report.static_notes.append(f"fixed-size graph: it can only run at {in_dims[2]}x{in_dims[3]}")
            if static_size is None:
                report.static_problems.append(
                    f"the graph's height/width are fixed at {in_dims[2]}x{in_dims[3]} although the model is dynamic"
                )
        if graph.resample_form == "resize" and graph.resize:
            report.static_notes.append(
                "resampling written as one antialiased Resize: right on ONNX Runtime CPU, but OpenVINO 2026.4 "
                "runs it wrongly and TensorRT refuses it; export with --resample portable to run anywhere"
            )
        if graph.opset >= 19 and graph.resize:
            report.static_notes.append(
                f"opset {graph.opset}: Resize-{graph.opset} runs on CUDA only in onnxruntime-gpu builds from 2026 on"
            )

    # the artifact's own weights as reference (also for the weight diff with --checkpoint)
    ts_module = None
    transformed = bool(metadata.get("quantization") or metadata.get("optimized"))
    if fmt == "onnx":
        use_artifact = metadata.get("config") and not (transformed and reference is not None)
        artifact_model = reference_from_onnx(path, metadata) if use_artifact else None
    else:
        ts_module = torch.jit.load(path, map_location="cpu")
        artifact_model = reference_from_torchscript(ts_module, metadata, path)
    if reference is None:
        reference = artifact_model
    elif artifact_model is not None:
        report.weight_diff = weight_difference(artifact_model, reference)
    assert reference is not None

    case_list = default_cases(cfg, batch_sizes) if sizes is None else cases_for(sizes, batch_sizes)
    if fixed_batch:
        case_list = [Case(c.height, c.width, fixed_batch, c.input_kind) for c in case_list]
        case_list = list(dict.fromkeys(case_list))

    # runners: one per provider
    runners: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    if fmt == "onnx":
        from vitexport.runtime import PROVIDERS, create_session, profile_placement, resolve_providers

        for name in resolve_providers(provider):
            try:
                session, info = create_session(path, "cuda" if name == "auto" else name, debug=debug)
                name = "cuda" if name == "auto" else name
            except EnvironmentProblem as exc:
                if name == "auto":  # auto: CUDA when usable, else the CPU, and the report says which
                    session, info = create_session(path, "cpu", debug=debug)
                    reason = str(exc).split("; use --provider")[0]
                    info.warnings.append(f"auto: verified on the CPU: {reason}")
                    name = "cpu"
                elif provider == "all":
                    report.skipped_providers.append(f"{name}: {exc}")
                    continue
                else:
                    raise
            info.requested = provider
            input_name = session.get_inputs()[0].name
            np_dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
            if name != "cpu":
                c0 = case_list[0]
                feeds = {input_name: make_input(c0, cfg.in_chans, seed).astype(np_dtype)}
                profile_placement(path, name, feeds, info)
            report.sessions.append({"name": name, **info.to_json()} | {"provider_chain": PROVIDERS[name]})

            def run(x: np.ndarray, s=session, n=input_name, t=np_dtype) -> np.ndarray:
                return s.run(None, {n: x.astype(t)})[0]

            runners.append((name, run))
    else:
        module = ts_module

        def run_ts(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        runners.append(("torchscript-cpu", run_ts))
        report.sessions.append({"name": "torchscript-cpu", "requested": provider, "providers": ["torch (CPU)"],
                                "warnings": [] if provider in ("auto", "cpu") else
                                [f"TorchScript is verified on the CPU; --provider {provider} applies to ONNX only"]})

    top1 = cfg.num_classes > 0
    total = len(case_list) * len(runners)
    done = 0
    outputs: dict[tuple[Case, str], np.ndarray] = {}
    for case in case_list:
        x = make_input(case, cfg.in_chans, seed)
        try:
            with torch.no_grad():
                ref, torch_ms = _time_call(lambda x=x: reference(torch.from_numpy(x)).numpy())
        except Exception as exc:  # the model itself does not accept this size (a static or unpadded model)
            ref, torch_ms = None, None
            ref_error = f"PyTorch rejects {case.height}x{case.width}: {' '.join(str(exc).split())[:160]}"
        gh, gw = reference.grid_for(case.height, case.width)
        ph, pw = cfg.patch_hw
        geometry = dict(
            padded_size=list(padded_size(case.height, case.width, (ph, pw)) if cfg.dynamic_img_pad
                             else (case.height, case.width)),
            grid=[gh, gw],
            seq_len=gh * gw + cfg.num_prefix_tokens,
        )
        for name, run in runners:
            result = CaseResult(case.height, case.width, case.batch, case.input_kind, provider=name, passed=False,
                                torch_ms=torch_ms, **geometry)
            if ref is None:
                result.error = ref_error
                report.cases.append(result)
                done += 1
                if progress is not None:
                    progress(result, done, total)
                continue
            try:
                out, result.runtime_ms = _time_call(lambda run=run, x=x: run(x))
                comp = compare(out, ref, atol, rtol, top1)
                outputs[(case, name)] = out
                for key in ("max_abs", "mean_abs", "max_rel", "cosine", "top1_agreement", "nonfinite"):
                    setattr(result, key, getattr(comp, key))
                result.passed = comp.within_tolerance
            except VerificationError as exc:
                result.error = str(exc)
            except Exception as exc:  # the runtime refused this input: that is a failed case, not a crash
                result.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            report.cases.append(result)
            done += 1
            if progress is not None:
                progress(result, done, total)

    if len(runners) > 1:
        names = [n for n, _ in runners]
        for case in case_list:
            for other in names[1:]:
                a, b = outputs.get((case, names[0])), outputs.get((case, other))
                if a is None or b is None:
                    continue
                comp = compare(b, a, atol, rtol, top1)
                report.cross_provider.append({"height": case.height, "width": case.width, "batch": case.batch,
                                              "providers": [names[0], other], "max_abs": comp.max_abs,
                                              "passed": comp.within_tolerance})
    report.seconds = time.perf_counter() - start
    return report
