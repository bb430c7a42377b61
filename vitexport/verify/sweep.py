"""Multi-resolution parity of an exported model against PyTorch: `verify` runs the sweep.

The phases, each in its module: the file under test (`artifact`), the cases (`cases`), the
PyTorch reference (`reference`), the comparison (`parity`), the likely causes of failures
(`diagnose`) and the returned `VerifyReport` (`report`, truthy when every case passed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitexport._util.errors import UsageError, VerificationError, one_line
from vitexport._util.files import refuse_inputs
from vitexport._util.geometry import grid_size, padded_size
from vitexport.engines import DEFAULT_PROVIDER, Engine, load_engines
from vitexport.model.family_config import config_from_dict
from vitexport.model.names import default_output
from vitexport.onnx.graph import check_summary, model_files
from vitexport.onnx.metadata import transformed_by_ort
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits
from vitexport.verify.artifact import Artifact, load_artifact, static_checks
from vitexport.verify.cases import (
    Case,
    case_list,
    heatmap_sizes,
    make_input,
    reduced_cases,
    within_limits,
)
from vitexport.verify.defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEED
from vitexport.verify.diagnose import diagnose_failures, native_grid
from vitexport.verify.parity import compare, tolerance_for
from vitexport.verify.reference import (
    reference_from_file,
    reference_from_onnx,
    reference_from_torchscript,
    weight_difference,
)
from vitexport.verify.report import CaseResult, CrossCheck, HeatmapSweep, VerifyReport


def _time_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1e3


def _new_report(artifact: Artifact, checkpoint: Any, atol: float | None, rtol: float | None,
                seed: int) -> VerifyReport:
    dtype = artifact.metadata.get("dtype", "float32")
    d_atol, d_rtol = tolerance_for(dtype)
    return VerifyReport(
        model=artifact.path, format=artifact.format,
        reference=f"checkpoint {str(checkpoint)!r}" if checkpoint is not None else "weights inside the artifact",
        dtype=dtype, atol=d_atol if atol is None else atol, rtol=d_rtol if rtol is None else rtol, seed=seed,
    )


def _references(artifact: Artifact, checkpoint: Any, config: Any) -> tuple[torch.nn.Module, dict | None]:
    """The PyTorch reference (the checkpoint's, else the artifact's own weights) and, with both, their weight diff."""
    reference = None
    if checkpoint is not None:
        reference = reference_from_file(str(checkpoint), config)
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


def _engines(artifact: Artifact, request: str, debug: bool, probe: np.ndarray,
             report: VerifyReport, limits: Limits) -> list[Engine]:
    """Load the engines to compare; their report entries (with placement diagnostics and the runtime's
    known issues with this model) go into ``report``."""
    if artifact.torchscript is not None:
        report.sessions.append(artifact.torchscript.describe())
        return [artifact.torchscript]
    # the engines and the PyTorch reference alternate case by case: spinning ONNX Runtime worker threads would
    # take the cores from the reference run that follows (as in bench --compare-torch)
    loaded, report.skipped_providers = load_engines(artifact.path, request, debug=debug, spin=False,
                                                    max_memory_gb=limits.max_memory_gb)
    for engine, notes in loaded:
        engine.diagnose(probe)
        entry = engine.describe() | {"requested": request}
        entry["warnings"] = [*notes, *engine.known_issues(artifact.metadata), *entry.get("warnings", [])]
        report.sessions.append(entry)
    return [engine for engine, _ in loaded]


def _plans(engines: list[Engine], cases: list[Case], cfg: Any, explicit_sizes: bool,
           report: VerifyReport) -> dict[str, list[Case]]:
    """The cases each engine runs: all of them, or a reduced default sweep for slow engines (noted in the report)."""
    plans: dict[str, list[Case]] = {}
    for engine, entry in zip(engines, report.sessions, strict=True):
        plans[engine.name] = cases
        if engine.reduced_sweep and not explicit_sizes:
            plans[engine.name] = reduced_cases(cfg, cases) or cases[:1]
            entry["notes"] = [*entry.get("notes", []), f"reduced sweep: {len(plans[engine.name])} of "
                              f"{len(cases)} cases (batch-1 random inputs up to 1.5x the native size's patches, "
                              f"one batched case), because {engine.reduced_sweep}; pass --sizes to choose the cases"]
    return plans


def _run_reference(reference: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray | None, float | None, str]:
    """(output, ms, error): the PyTorch reference on ``x``; an error when the model refuses that size."""
    try:
        with torch.no_grad():
            out, ms = _time_call(lambda: reference(torch.from_numpy(x)).numpy())
        return out, ms, ""
    except Exception as exc:  # the model itself does not accept this size (a static or unpadded model)
        return None, None, f"PyTorch rejects {x.shape[2]}x{x.shape[3]}: {one_line(exc, 160)}"


def _geometry(case: Case, cfg: Any) -> dict[str, Any]:
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
    for key in ("max_abs", "mean_abs", "max_rel", "cosine", "top1_agreement", "nonfinite", "ref_scale",
                "rel_to_scale"):
        setattr(result, key, getattr(comp, key))
    result.passed = comp.within_tolerance
    return out


def _sweep(cases: list[Case], cfg: Any, reference: torch.nn.Module, engines: list[Engine],
           plans: dict[str, list[Case]], report: VerifyReport,
           progress: Callable[[CaseResult, int, int], None] | None, total: int) -> dict:
    """Every case through the reference and the engines whose plan holds it; results go into ``report``,
    outputs are returned. ``total``: the cases ``progress`` counts to."""
    outputs: dict[tuple[Case, str], np.ndarray] = {}
    for case in cases:
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
                out = _run_case(engine, x, ref, result, report.atol, report.rtol, reference.output == "logits")
                if out is not None:
                    outputs[(case, engine.name)] = out
            report.cases.append(result)
            if progress is not None:
                progress(result, len(report.cases), total)
    return outputs


def _cold_plans(engines: list[Engine], plans: dict[str, list[Case]]) -> dict[str, list[Case]]:
    """The cases of a fresh compile for each engine whose first inference after compiling can spoil later ones
    (`Engine.cold_start`): the sweep's smallest size first, then its first (native) and its largest size."""
    cold = {}
    for engine in engines:
        plan = plans[engine.name]
        if engine.cold_start and plan:
            batch = min(c.batch for c in plan)  # 1, or a fixed-batch export's batch
            sizes = sorted({(c.height, c.width) for c in plan}, key=lambda hw: (hw[0] * hw[1], hw))
            order = dict.fromkeys([sizes[0], (plan[0].height, plan[0].width), sizes[-1]])
            cold[engine.name] = [Case(h, w, batch) for h, w in order]
    return cold


def _cold_starts(cold: dict[str, list[Case]], cfg: Any, reference: torch.nn.Module, engines: list[Engine],
                 report: VerifyReport, progress: Callable[[CaseResult, int, int], None] | None, total: int) -> None:
    """Run `_cold_plans` on a fresh compile of each such engine, in order, each case against the reference; the
    results go into ``report`` marked ``fresh_compile``. The sweep itself runs on an engine whose first request was
    its first case, so it cannot see what a first request of the smallest size does."""
    for engine in engines:
        if engine.name not in cold:
            continue
        fresh = engine.fresh()
        for case in cold[engine.name]:
            x = make_input(case, cfg.in_chans, report.seed)
            ref, torch_ms, ref_error = _run_reference(reference, x)
            result = CaseResult(case.height, case.width, case.batch, case.input_kind, provider=engine.name,
                                passed=False, torch_ms=torch_ms, fresh_compile=True, **_geometry(case, cfg))
            if ref is None:
                result.error = ref_error
            else:
                _run_case(fresh, x, ref, result, report.atol, report.rtol, reference.output == "logits")
            report.cases.append(result)
            if progress is not None:
                progress(result, len(report.cases), total)


def _cross_compare(cases: list[Case], names: list[str], outputs: dict, report: VerifyReport, top1: bool) -> None:
    """With several engines: each one's outputs against the first one's, per case."""
    for case in cases:
        for other in names[1:]:
            a, b = outputs.get((case, names[0])), outputs.get((case, other))
            if a is None or b is None:
                continue
            comp = compare(b, a, report.atol, report.rtol, top1)
            report.cross_provider.append(CrossCheck(case.height, case.width, case.batch, [names[0], other],
                                                    comp.max_abs, comp.within_tolerance))


def verify(
    model_path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: Any = None,
    provider: str = DEFAULT_PROVIDER,
    sizes: list[tuple[int, int]] | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = DEFAULT_SEED,
    progress: Callable[[CaseResult, int, int], None] | None = None,
    debug: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
    skip_over_token_limit: bool = False,
    outputs: tuple[str | Path | None, ...] = (),
) -> VerifyReport:
    """Run an exported model (ONNX or TorchScript) against PyTorch over a sweep of sizes and batches.

    Every case is checked against the limits before anything runs: a request over them is a
    `LimitError` naming the costliest case.

    Args:
        model_path: the exported .onnx or TorchScript file.
        checkpoint: the reference's source instead of the weights inside the file: the original checkpoint, or
            the float .onnx a transformed (int8, optimized) model was made from; also reports changed weights.
        config: the config for ``checkpoint`` (a dict, a JSON file or JSON text).
        provider: the engine (`vitexport.engines.PROVIDER_CHOICES`): ``auto``, ``cpu``, ``cuda``, ``tensorrt``,
            ``openvino``, ``reference``, or ``all`` (every usable engine, also compared with each other).
        sizes: HxW sizes to run (default: a sweep derived from the model, `vitexport.verify.cases.default_cases`;
            its sizes over the token limit are skipped and listed in the report).
        batch_sizes: the batch sizes of every size.
        atol: absolute tolerance (default: by the model's dtype, `vitexport.export.defaults.TOLERANCES`).
        rtol: relative tolerance (default: by dtype).
        seed: the seed of the random inputs.
        progress: called with each case's result, the number done and the total, as cases finish.
        debug: keep engine diagnostics verbose.
        max_tokens: refuse cases with more tokens per image (`vitexport.security.limits`).
        max_memory_gb: refuse cases whose estimated forward pass is larger.
        skip_over_token_limit: skip (and list) explicit ``sizes`` over the token limit instead of refusing them.
        outputs: files the caller will write afterwards (a report, a plot): one that is an input (the model,
            its external data, the checkpoint) is refused before the sweep.
    """
    limits = Limits(max_tokens, max_memory_gb)
    _check_tolerances(atol, rtol, seed)
    start = time.perf_counter()
    artifact = load_artifact(str(model_path), provider, limits)
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


def _verify_artifact(artifact: Artifact, start: float, *, checkpoint: Any, config: Any, provider: str,
                     sizes: list[tuple[int, int]] | None, batch_sizes: tuple[int, ...], atol: float | None,
                     rtol: float | None, seed: int, progress: Any, debug: bool, limits: Limits,
                     skip_large: bool) -> VerifyReport:
    """The phases of `verify` once the artifact is loaded."""
    report = _new_report(artifact, checkpoint, atol, rtol, seed)
    fixed_batch = artifact.metadata.get("batch_size")
    declared = config_from_dict(artifact.metadata["config"]) if artifact.metadata.get("config") else None
    if declared is not None:  # the work asked for is refused before any model is built
        cases, report.skipped_cases = within_limits(case_list(declared, sizes, batch_sizes, fixed_batch), declared,
                                                    limits, skip_large,
                                                    artifact.metadata.get("attention"))
    reference, report.weight_diff = _references(artifact, checkpoint, config)
    cfg = declared or reference.config
    if declared is None:
        cases, report.skipped_cases = within_limits(case_list(cfg, sizes, batch_sizes, fixed_batch), cfg, limits,
                                                    skip_large, artifact.metadata.get("attention"))
    report.config = cfg.to_dict()
    if artifact.graph is not None:
        report.static_problems, report.static_notes = static_checks(artifact.graph, artifact.metadata, cfg)
        dynamic_size = artifact.metadata.get("static_size") is None and cfg.dynamic_img_size
        report.static_checks = check_summary(artifact.graph, dynamic_size)
    engines = _engines(artifact, provider, debug, make_input(cases[0], cfg.in_chans, seed), report, limits)
    plans = _plans(engines, cases, cfg, sizes is not None, report)
    output = report.output = artifact.metadata.get("output") or default_output(cfg.num_classes)
    with reference.producing(output):  # the reference returns what the artifact does: logits, features or tokens
        cold = _cold_plans(engines, plans)
        total = sum(len(plans[e.name]) for e in engines) + sum(map(len, cold.values()))
        outputs = _sweep(cases, cfg, reference, engines, plans, report, progress, total)
        _cold_starts(cold, cfg, reference, engines, report, progress, total)
    if len(engines) > 1:
        _cross_compare(cases, [e.name for e in engines], outputs, report, output == "logits")
    report.diagnoses = diagnose_failures(report, artifact.graph, native_grid(artifact.metadata, cfg))
    report.seconds = time.perf_counter() - start
    return report


def heatmap_sweep(
    model_path: str | Path,
    report: VerifyReport,
    *,
    checkpoint: str | Path | None = None,
    config: Any = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
) -> HeatmapSweep:
    """Verify again over a grid of heights x widths (1 to 4x native), with ``report``'s engine and tolerances.

    Args:
        model_path: the file ``report`` verified.
        report: a `verify` report of it (its engine, tolerances, seed and config are reused).
        checkpoint: as for `verify`.
        config: as for `verify`.
        max_tokens: grid sizes over this many tokens per image are skipped.
        max_memory_gb: refuse the sweep if a case's estimated forward pass is larger.
    """
    cfg = config_from_dict(report.config)
    heights, widths = heatmap_sizes(cfg.img_hw, cfg.patch_hw)
    first = report.sessions[0] if report.sessions else {}
    provider = first.get("name" if report.format == "onnx" else "requested", DEFAULT_PROVIDER)
    grid = verify(model_path, checkpoint=checkpoint, config=config, provider=provider,
                  sizes=[(h, w) for h in heights for w in widths], batch_sizes=(1,), atol=report.atol,
                  rtol=report.rtol, seed=report.seed, max_tokens=max_tokens, max_memory_gb=max_memory_gb,
                  skip_over_token_limit=True)
    return HeatmapSweep(heights, widths, grid)


__all__ = ["heatmap_sweep", "verify"]
